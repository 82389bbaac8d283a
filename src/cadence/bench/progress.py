"""Live progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self, total: int, label: str = "bench", stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.sent = self.done = self.failed = self.tokens = 0
        self.start = time.perf_counter()
        self._task: asyncio.Task | None = None

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        rate = self.tokens / elapsed if elapsed > 0 else 0.0
        return (
            f"{self.label} [{bar}] {self.done}/{self.total} done, {self.sent - self.done} in flight, "
            f"{self.failed} failed, {rate:,.0f} tok/s, {elapsed:,.1f} s"
        )

    async def _loop(self) -> None:
        period = 0.25 if self.tty else 10.0
        while True:
            await asyncio.sleep(period)
            self._draw()

    def _draw(self, end: str = "") -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line() + end)
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def begin(self) -> None:
        if self.enabled:
            self.start = time.perf_counter()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def finish(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self._draw("\n")
