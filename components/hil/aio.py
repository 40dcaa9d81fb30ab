"""An asyncio event loop in a background thread, for synchronous callers.

The co-simulation step is synchronous; the protocol stacks (pymodbus servers, ocpp over
websockets) are asyncio. :class:`BackgroundLoop` runs one loop in a daemon thread and runs
coroutines on it with a bounded wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """An event loop running in its own thread until :meth:`close`.

    Parameters
    ----------
    name : str
        Thread name (shows in logs and debuggers).
    """

    def __init__(self, name: str = "hil-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (at most ``timeout`` s).

        Raises ``TimeoutError`` (after cancelling the coroutine) when the wait runs out.
        """
        if not self.loop.is_running() and self.loop.is_closed():
            raise RuntimeError("the background loop is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None

    def close(self, timeout: float = 5.0) -> None:
        """Cancel pending tasks, stop the loop and join the thread."""
        if self.loop.is_closed():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError):
                pass  # tasks that ignore cancellation must not keep the process alive
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
