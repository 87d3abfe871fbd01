"""Where a run's wall time goes besides its epochs, for summary.json's `timings`."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class Timings:
    """Seconds per named part of a run; parts may be entered several times (they add up)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.parts: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + seconds

    def report(self, background: tuple[str, ...] = ()) -> dict[str, float]:
        """Each part, `other` (what no foreground part covers) and `total` (since the run started),
        rounded to ms. `background` parts ran beside the others (a drawing thread): not subtracted."""
        total = time.perf_counter() - self.start
        fore = sum(v for k, v in self.parts.items() if k not in background)
        out = {k: round(v, 3) for k, v in self.parts.items()}
        return {**out, "other": round(max(0.0, total - fore), 3), "total": round(total, 3)}
