"""The `sweep:` settings that take more than a type check: `sweep.time_budget` (a duration),
`sweep.order` (an earlier sweep's measured importance as the tiers) and successive halving
(`sweep.halving`, `sweep.promote`), `sweep.budget` in trials or epochs, and `sweep.rank_by` (the
statistic trials are ranked by)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlrunner.errors import DlrunError
from dlrunner.validate import METRICS


def parse_duration(v: Any) -> float | None:
    """`30m`, `2h`, `90s` or a number of seconds; None/null: no limit."""
    if v is None or v == "":
        return None
    if isinstance(v, (int, float)):
        return float(v)
    text = str(v).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except ValueError:
        raise DlrunError(f"sweep.time_budget={v!r}: give seconds or a duration such as 30m, 2h") from None


def measured_order(path: str) -> list[str]:
    """Keys by measured importance from an earlier sweep's importance.json (its folder or the file)."""
    p = Path(path)
    p = p / "importance.json" if p.is_dir() else p
    try:
        measured = json.loads(p.read_text()).get("measured") or {}
    except (OSError, ValueError) as e:
        raise DlrunError(f"sweep.order={path}: cannot read an importance.json there ({e})") from None
    if not measured:
        raise DlrunError(f"sweep.order={path}: that sweep measured no importance")
    return sorted(measured, key=lambda k: -measured[k])


def halving(s: Any, epochs: int) -> tuple[int, int, float]:
    """(k, rung epochs, promoted share): with sweep.halving=k > 1 a point first trains epochs // k
    epochs, then the best share of a stage's points (sweep.promote, else 1/k) continue to `epochs`."""
    k = int(s.get("halving") or 1)
    rung = max(1, epochs // k)
    if k <= 1 or rung >= epochs:  # a one-epoch job: whole runs
        k, rung = 1, epochs
    share = s.get("promote")
    share = 1 / k if share is None else float(share)
    if not 0 < share <= 1:
        raise DlrunError(f"sweep.promote must be in (0, 1] (the share of short runs continued), got {share}")
    return k, rung, share


def rank_metric(rank_by: Any, optimized: str) -> str:
    """`sweep.rank_by`: the metric every trial optimizes (its best epoch) and the sweep ranks, promotes
    and picks by. auto: val/loss for a job that optimizes val/acc (on a few hundred validation samples
    an accuracy moves in steps of one sample and ties; the loss of the same predictions is continuous,
    and a pick made on it generalizes better: bench/search.py), else the job's own optimized_metric."""
    text = "auto" if rank_by is None else str(rank_by)
    if text == "auto":
        return "val/loss" if optimized == "val/acc" else optimized
    if text not in METRICS:
        raise DlrunError(f"sweep.rank_by must be auto or one of {', '.join(METRICS)}; got {rank_by!r}")
    return text


AUTO_TRIALS = 24  # sweep.budget=auto without a time budget


def parse_budget(v: Any, epochs: int, timed: bool = False) -> int | None:
    """`sweep.budget`: trials (24), or epochs in all (`240ep`, `240 epochs`), counted as whole runs of
    the job's `epochs` (successive halving spends them on more, shorter runs). `auto`: 24 trials, or
    None with a time budget (`timed`): the trials are as many as the time allows."""
    text = str(v).strip().lower().replace(" ", "")
    if text in ("auto", "none", "null"):
        return None if timed else AUTO_TRIALS
    try:
        if text.endswith(("ep", "epochs")):
            return round(float(text.removesuffix("epochs").removesuffix("ep")) / max(1, epochs))
        return int(text)
    except ValueError:
        raise DlrunError(f"sweep.budget={v!r}: give trials (24), epochs in all (240ep) or auto") from None
