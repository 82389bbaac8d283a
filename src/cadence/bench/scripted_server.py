"""A scripted OpenAI-compatible streaming server on raw asyncio, to test and calibrate the bench client.

Two modes. Scripted: each request streams its first chunk `ttft` after the request arrives and then one
chunk every `tbt`, on an absolute schedule (no drift), so the truth is known. Engine: a toy continuous
batcher whose step takes `step + step_per_request * running` seconds, so latency grows with load and
a capacity search has something to find. Faults (HTTP 500, malformed JSON, a dropped connection, an
error event) can be injected on every n-th request.

Run it by hand: `python -m cadence.bench.scripted_server --port 8000 --tbt 0.02`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cadence.bench.precise_loop import run_precise

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


@dataclass(frozen=True)
class Script:
    model: str = "scripted"
    ttft: float = 0.05
    ttft_per_prompt_token: float = 0.0
    tbt: float = 0.02  # between chunks
    tokens_per_chunk: int = 1
    engine: bool = False  # toy continuous batching instead of independent streams
    step: float = 0.01
    step_per_request: float = 0.0005
    fault: str = ""  # "http_500", "malformed", "disconnect", "stream_error"
    fault_every: int = 0  # inject the fault on requests 1, 1 + n, 1 + 2n, ... (0 = never)


def truth_token_offsets(script: Script, prompt_tokens: int, output_tokens: int) -> list[float]:
    """Scripted mode: seconds from the server receiving a request to each of its output tokens."""
    first = script.ttft + script.ttft_per_prompt_token * prompt_tokens
    return [first + (j // script.tokens_per_chunk) * script.tbt for j in range(output_tokens)]


class _Engine:
    """Every step, each running request gets one token; new requests join at the next step."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.waiting: list[asyncio.Queue] = []
        self.wake = asyncio.Event()

    def submit(self, n_tokens: int) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        q.remaining = n_tokens  # type: ignore[attr-defined]
        self.waiting.append(q)
        self.wake.set()
        return q

    async def loop(self) -> None:
        running: list[asyncio.Queue] = []
        while True:
            if not running and not self.waiting:
                self.wake.clear()
                await self.wake.wait()
            running += self.waiting
            self.waiting = []
            await asyncio.sleep(self.script.step + self.script.step_per_request * len(running))
            for q in running:
                q.remaining -= 1  # type: ignore[attr-defined]
                q.put_nowait(q.remaining == 0)  # type: ignore[attr-defined]
            running = [q for q in running if q.remaining > 0]  # type: ignore[attr-defined]


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.count = 0
        self.engine = _Engine(script) if script.engine else None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                received = time.perf_counter()
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._route(method, path, body, received, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _route(
        self, method: str, path: str, body: bytes, received: float, w: asyncio.StreamWriter
    ) -> bool:
        if method == "GET" and path == "/v1/models":
            return await _respond(
                w, 200, {"object": "list", "data": [{"id": self.script.model, "object": "model"}]}
            )
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return await _respond(w, 404, {"error": {"message": f"no route {method} {path}"}})
        req = json.loads(body)
        if req.get("model") != self.script.model:
            return await _respond(
                w, 404, {"error": {"message": f"The model `{req.get('model')}` does not exist."}}
            )
        self.count += 1
        fault = (
            self.script.fault
            if self.script.fault_every and (self.count - 1) % self.script.fault_every == 0
            else ""
        )
        if fault == "http_500":
            return await _respond(w, 500, {"error": {"message": "scripted internal error"}})
        chat = path.endswith("chat/completions")
        prompt = req["messages"][-1]["content"] if chat else req.get("prompt", "")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(prompt.split())
        n = int(req.get("max_tokens") or 16)
        opts = req.get("stream_options") or {}
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await self._stream(w, n, prompt_tokens, received, chat, opts, fault)
        return fault != "disconnect"

    async def _stream(
        self, w, n: int, prompt_tokens: int, received: float, chat: bool, opts: dict, fault: str
    ) -> None:
        s = self.script
        continuous = bool(opts.get("continuous_usage_stats"))
        offsets = truth_token_offsets(s, prompt_tokens, n)
        queue = self.engine.submit(n) if self.engine else None
        sent = 0
        while sent < n:
            if queue is not None:
                await queue.get()
                k = 1
            else:
                k = min(s.tokens_per_chunk, n - sent)
                delay = received + offsets[sent] - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent += k
            if fault and sent > n // 2:
                payload = {
                    "malformed": b"data: {not json\n\n",
                    "stream_error": _sse({"error": {"message": "scripted failure"}}),
                }
                if fault in payload:
                    await _chunk(w, payload[fault])
                    await _chunk(w, b"")
                # "disconnect": drop the connection mid-stream without ending the chunked body.
                return
            text = " " + " ".join(WORDS[(sent - i) % len(WORDS)] for i in range(k, 0, -1))
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            choice["finish_reason"] = "length" if sent == n else None
            event: dict = {"id": "cmpl-s", "object": "chunk", "model": s.model, "choices": [choice]}
            # Server clock readings (CLOCK_MONOTONIC, shared by processes on one host) to calibrate the client.
            event["server_times"] = {"received": received, "sent": time.perf_counter()}
            if continuous:
                event["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": sent,
                    "total_tokens": prompt_tokens + sent,
                }
            await _chunk(w, _sse(event))
        if opts.get("include_usage"):
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n,
            }
            await _chunk(w, _sse({"id": "cmpl-s", "model": s.model, "choices": [], "usage": usage}))
        await _chunk(w, b"data: [DONE]\n\n")
        await _chunk(w, b"")


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _chunk(w: asyncio.StreamWriter, data: bytes) -> None:
    w.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await w.drain()


async def _respond(w: asyncio.StreamWriter, status: int, obj: dict) -> bool:
    body = json.dumps(obj).encode()
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Error")
    w.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await w.drain()
    return True


async def serve(script: Script, host: str = "127.0.0.1", port: int = 0, ready=None) -> None:
    server = ScriptedServer(script)
    srv = await asyncio.start_server(server.handle, host, port, backlog=4096)
    tasks = [asyncio.create_task(server.engine.loop())] if server.engine else []
    if ready is not None:
        ready(srv.sockets[0].getsockname()[1])
    async with srv:
        await srv.serve_forever()
    del tasks


@contextlib.contextmanager
def serve_in_subprocess(script: Script, timeout: float = 30.0) -> Iterator[str]:
    """Start the server in its own process (so it never shares the client's CPU time slice) and yield its URL."""
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    cmd = [
        sys.executable,
        "-m",
        "cadence.bench.scripted_server",
        "--port",
        "0",
        "--script",
        json.dumps(dataclasses.asdict(script)),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"scripted server failed to start (got {line!r})")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--script", default=None, help="Script fields as JSON (overrides the flags below)")
    for f in dataclasses.fields(Script):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(Script)}
    script = Script(**json.loads(args.script)) if args.script else Script(**fields)

    def ready(port: int) -> None:
        print(f"PORT {port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        # The precise loop keeps the server's own timing error near 0.1 ms, so tests measure the client.
        run_precise(serve(script, args.host, args.port, ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
