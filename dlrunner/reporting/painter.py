"""Pictures drawn off the training path: one background thread draws what a run submits while it
goes on training (or, at the end, while it writes its checkpoints and analysis); the run waits for
it before its last write, summary.json, so a finished folder always holds every picture."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class Painter:
    """`submit(key, fn, *args)` queues a picture; a newer one with the same key (curves.png after
    every epoch) replaces one still waiting. `wait()` blocks until everything is drawn and returns
    the drawing seconds; the first error raised by a picture is kept in `errors`."""

    def __init__(self, warn: Callable[[str], None] | None = None):
        self.warn = warn
        self.seconds = 0.0
        self.errors: list[str] = []
        self._pending: dict[str, tuple[Callable, tuple]] = {}
        self._busy = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None  # the worker while it has work
        self._last: threading.Thread | None = None  # the latest worker, joined by wait()

    def submit(self, key: str, fn: Callable[..., Any], *args: Any) -> None:
        with self._cond:
            self._pending[key] = (fn, args)
            if self._thread is None:  # the worker ends when it runs out of work: no idle thread per run
                self._thread = self._last = threading.Thread(target=self._work, name="dlrun-painter", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                key = next(iter(self._pending))
                fn, args = self._pending.pop(key)
                self._busy = True
            t0 = time.perf_counter()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - a picture never takes the run down
                first = (str(e).strip().splitlines() or [""])[0]
                self.errors.append(f"{key}: {type(e).__name__}: {first[:160]}")
            finally:
                with self._cond:
                    self.seconds += time.perf_counter() - t0
                    self._busy = False
                    self._cond.notify_all()

    def wait(self) -> float:
        """Block until every submitted picture is drawn; warn once per failed one."""
        with self._cond:
            while self._pending or self._busy or self._thread is not None:
                self._cond.wait()
            errors, self.errors, last = self.errors, [], self._last
        if last is not None:
            last.join()  # it has returned or is returning: nothing of it is left when wait() returns
        for err in errors:
            if self.warn:
                self.warn(f"picture skipped ({err})")
        return self.seconds
