"""The server's own knobs; `cadence serve` derives a flag from each field."""

from __future__ import annotations

from dataclasses import dataclass, field

API_KEY_ENV = "CADENCE_API_KEY"


@dataclass(frozen=True)
class ServerConfig:
    """HTTP front end: address, access control, back-pressure and shutdown."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "TCP port to listen on"})
    api_key: str | None = field(
        default=None, metadata={"help": f"require 'Authorization: Bearer KEY' on /v1 routes (or set {API_KEY_ENV})"}
    )
    max_queue: int | None = field(
        default=1024, metadata={"help": "most requests waiting to be scheduled; beyond it new ones get 503"}
    )
    shutdown_timeout: float = field(
        default=5.0, metadata={"help": "seconds in-flight requests may finish after SIGTERM before they are ended"}
    )
    access_log: bool = field(default=True, metadata={"help": "log one JSON line per generation request"})
    log_level: str = field(default="info", metadata={"help": "log level",
                                                     "choices": ("debug", "info", "warning", "error")})
    replicas: int = field(
        default=1, metadata={"help": "engine replicas, each in its own process, behind this one front end"}
    )
    engine_process: bool | None = field(default=None, metadata={
        "help": "run the engine in its own process even with one replica, so the HTTP front end never holds "
                "the GIL the step loop needs (outputs cross a pipe once a step); none: on when the engine "
                "runs on a CUDA GPU, off on CPU"})
    router: str = field(default="round_robin", metadata={
        "help": "how --replicas share requests", "choices": ("round_robin", "least_outstanding", "kv_aware")})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_queue is not None and self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0, got {self.shutdown_timeout}")
