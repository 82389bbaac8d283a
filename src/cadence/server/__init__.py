"""OpenAI-compatible HTTP server: `cadence serve`, or `build_app(AsyncEngine(LLMEngine()))`."""
