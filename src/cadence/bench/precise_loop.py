"""An asyncio event loop whose timers fire within about 0.1 ms instead of up to 1 ms late.

epoll waits in whole milliseconds and Python rounds a timer's wait up, so a request scheduled at t is
sent between t and t + 1 ms (0.6 ms late at the median, measured here). This selector waits the whole
milliseconds with epoll as usual, then covers the last fraction with short sleeps between zero-timeout
polls: a socket that becomes readable meanwhile is seen within one short sleep, so reads stay as
prompt as the timers. Outside that last millisecond it costs nothing.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_STEP_S = 100e-6  # one short sleep; the kernel adds its 50 us timer slack


class PreciseSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    def select(self, timeout: float | None = None):  # type: ignore[override]
        if timeout is None or timeout <= 0:
            return super().select(timeout)
        deadline = time.monotonic() + timeout  # asyncio's own clock
        whole_ms = math.floor(timeout * 1e3) * 1e-3
        if whole_ms > 0:
            ready = super().select(whole_ms - 1e-7)  # rounds up to exactly whole_ms
            if ready:
                return ready
        while True:
            ready = super().select(0)
            remaining = deadline - time.monotonic()
            if ready or remaining <= 0:
                return ready
            time.sleep(min(remaining, _STEP_S))


def new_precise_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(PreciseSelector())


def run_precise(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the precise loop."""
    if hasattr(asyncio, "Runner"):  # Python 3.11+
        with asyncio.Runner(loop_factory=new_precise_loop) as runner:
            return runner.run(coro)
    loop = new_precise_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
