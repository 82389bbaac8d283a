"""`cadence serve`: the OpenAI-compatible HTTP server, on uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

import uvicorn

from cadence.config_args import add_dataclass_args, dataclass_from_args
from cadence.server.serving import Serving

logger = logging.getLogger("cadence.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadence.core.config import CacheConfig, SchedulerConfig
    from cadence.engine.config import ModelLoadConfig, ParallelConfig
    from cadence.server.config import ServerConfig

    add_dataclass_args(parser, ServerConfig)
    add_dataclass_args(parser, ModelLoadConfig)
    add_dataclass_args(parser, SchedulerConfig)
    add_dataclass_args(parser, CacheConfig)
    add_dataclass_args(parser, ParallelConfig)


def run(args: argparse.Namespace) -> int:
    from cadence.core.config import CacheConfig, SchedulerConfig
    from cadence.engine.async_engine import AsyncEngine
    from cadence.engine.config import EngineConfig, ModelLoadConfig, ParallelConfig
    from cadence.engine.llm_engine import LLMEngine
    from cadence.server.app import build_app
    from cadence.server.config import API_KEY_ENV, ServerConfig

    try:
        config = dataclass_from_args(ServerConfig, args,
                                     api_key=getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV) or None)
        logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if not config.access_log:
            logging.getLogger("cadence.access").setLevel(logging.WARNING)
        engine_config = EngineConfig(load=dataclass_from_args(ModelLoadConfig, args),
                                     scheduler=dataclass_from_args(SchedulerConfig, args),
                                     cache=dataclass_from_args(CacheConfig, args),
                                     parallel=dataclass_from_args(ParallelConfig, args))
        own_process = config.engine_process
        if own_process is None:  # on a GPU the step loop must not wait for the front end's GIL
            own_process = engine_config.load.device != "cpu" and _cuda_available()
        if config.replicas > 1 or own_process:
            from cadence.distributed.replicas import ReplicaPool

            engine = ReplicaPool(engine_config, config.replicas, config.router, max_queue=config.max_queue)
        else:
            engine = AsyncEngine(LLMEngine(engine_config), max_queue=config.max_queue)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # RuntimeError: a replica failed to start
        print(f"cadence serve: {exc}", file=sys.stderr)
        return 2
    app = build_app(engine, config)  # type: ignore[arg-type]  # a ReplicaPool serves as an AsyncEngine
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level,
                               access_log=False, timeout_graceful_shutdown=config.shutdown_timeout + 5.0)
    server = _Server(uv_config, app.state.serving, config.shutdown_timeout)
    # uvicorn re-raises the signal that stopped it once it is done; a no-op handler keeps exit code 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    logger.info("serving %s on http://%s:%d/v1", engine.model_name, config.host, config.port)
    try:
        server.run()
    finally:
        if isinstance(engine, AsyncEngine):  # its loop has stopped: free the cache, stop any TP workers
            engine.engine.shutdown()
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class _Server(uvicorn.Server):
    """uvicorn's server, whose exit signal first drains in-flight requests (stop accepting, let them
    finish for `shutdown_timeout` s, then end them with an error event)."""

    def __init__(self, config: uvicorn.Config, serving: Serving, shutdown_timeout: float) -> None:
        super().__init__(config)
        self.serving = serving
        self.shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._loop is None or self._drain_started:
            return
        self._drain_started = True
        logger.info("signal %d: draining %d request(s) in flight", sig, self.serving.num_in_flight)
        # A signal handler runs between any two bytecodes: hand the drain to the loop instead.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        assert self._loop is not None
        self._drain_task = self._loop.create_task(self.serving.drain(self.shutdown_timeout))
