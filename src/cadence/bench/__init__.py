"""`cadence bench`: a load generator and meter for any OpenAI-compatible endpoint."""
