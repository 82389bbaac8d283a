"""The FastAPI application: routes, API-key check, OpenAPI schema; the engine starts and stops with it."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from cadence import __version__
from cadence.engine.async_engine import AsyncEngine
from cadence.server.chat import ChatEndpoint
from cadence.server.completions import CompletionEndpoint
from cadence.server.config import ServerConfig
from cadence.server.errors import APIError, error_body, from_validation_error, install_error_handlers
from cadence.server.metrics import CONTENT_TYPE, ServerMetrics
from cadence.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from cadence.server.serving import Serving

M = TypeVar("M", bound=BaseModel)
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 503)}


class APIKeyMiddleware:
    """401 for /v1 routes without `Authorization: Bearer <key>`; /health and /metrics stay open."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = error_body(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  code="invalid_api_key")
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _parse(request: Request, model: type[M]) -> M:
    """Strict JSON parsing of our own, so that every complaint is an OpenAI-style 400."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def build_app(engine: AsyncEngine, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    metrics = ServerMetrics(engine.stats)
    serving = Serving(engine, metrics, [engine.model_name])
    completions, chat = CompletionEndpoint(serving), ChatEndpoint(serving)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)

    app = FastAPI(title="Cadence", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API served by Cadence")
    app.state.serving = serving
    app.state.config = config
    install_error_handlers(app)
    if config.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=config.api_key)

    @app.get("/health", responses={503: {"model": ErrorResponse}})
    async def health() -> Response:
        if serving.draining or not engine.is_running:
            raise APIError(503, "shutting down" if serving.draining else "the engine is not running")
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def card() -> ModelCard:
        return ModelCard(id=engine.model_name, max_model_len=engine.max_model_len)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS)
    async def models() -> ModelList:
        return ModelList(data=[card()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS)
    async def model(model_id: str) -> ModelCard:
        if model_id != engine.model_name:
            raise APIError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")
        return card()

    @app.post("/v1/completions", openapi_extra=_body_doc(CompletionRequest),
              responses={200: {"model": CompletionResponse}, **_ERRORS})
    async def create_completion(request: Request) -> Response:
        return await completions(await _parse(request, CompletionRequest), request)

    @app.post("/v1/chat/completions", openapi_extra=_body_doc(ChatCompletionRequest),
              responses={200: {"model": ChatCompletionResponse}, **_ERRORS})
    async def create_chat_completion(request: Request) -> Response:
        return await chat(await _parse(request, ChatCompletionRequest), request)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for m in (CompletionRequest, ChatCompletionRequest):
                js = m.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(js.pop("$defs", {}))
                components[m.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
