"""Which way a metric improves: the one rule every mode, report and sweep uses (no torch here:
dlrun-report reads it too)."""
from __future__ import annotations


def minimize(metric: str) -> bool:
    """Lower is better for a loss (`val/loss`), higher for everything else (`val/acc`)."""
    return "loss" in metric


def improves(value: float | None, best: float | None, lower: bool) -> bool:
    """Whether `value` beats the best so far (the first value always does)."""
    return best is None or (value < best if lower else value > best)
