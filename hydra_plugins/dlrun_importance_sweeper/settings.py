"""Two `sweep:` settings that take more than a type check: `sweep.time_budget` (a duration) and
`sweep.order` (an earlier sweep's measured importance as the tiers)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlrunner.errors import DlrunError


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
