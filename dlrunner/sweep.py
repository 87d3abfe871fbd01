"""The importance-ordered sweep's pieces that do not need Hydra's machinery: the search space
read from `sweep.space`/`sweep.groups`, quasi-random proposals, and the trial record (trials.csv,
which is also what a resumed sweep reads back); the reports are in sweep_report.py. The Hydra
Sweeper plugin (hydra_plugins/dlrun_importance_sweeper) drives them stage by stage."""
from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrunner.errors import DlrunError
from dlrunner.reporting.files import atomic_write

CSV_FIELDS = ["trial", "stage", "round", "seed", "overrides", "metric", "time", "status", "error", "run_dir", "launch"]


@dataclass
class Param:
    """One searched dimension. `key` is an override key: `optim.lr`, or a config group (`schedule`)."""

    key: str
    kind: str                       # log | linear | choice
    low: float = 0.0
    high: float = 0.0
    integer: bool = False
    choices: list[Any] = field(default_factory=list)
    relative: bool = False          # low/high are multiples of the config's own value ({times: [lo, hi]})

    def around(self, value: Any) -> "Param":
        """A relative range made absolute around `value` (the incumbent's): integer if it is."""
        if not self.relative:
            return self
        if not _is_number(value) or value <= 0:
            raise DlrunError(f"sweep.space.{self.key}: {{times: ...}} needs a positive number, the config has {value!r}")
        integer = isinstance(value, int)
        low, high = value * self.low, value * self.high
        if integer:
            low, high = max(1, round(low)), max(2, round(high))
        return Param(self.key, self.kind, float(low), float(max(high, low * 1.01)), integer)

    def value(self, u: float) -> Any:
        """The point at quantile u in [0, 1) of the range (log-spaced for `log`)."""
        if self.kind == "choice":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.kind == "log":
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return max(1, round(v)) if self.integer else float(f"{v:.3g}")

    def position(self, v: float) -> float:
        """Where v sits in the range, 0 at `low` and 1 at `high` (on the search's own scale)."""
        if self.kind == "log":
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)


def parse_param(key: str, spec: Any) -> Param:
    """`[lo, hi]` (two numbers): a log-scale range (integer when both are); any other list: choices;
    `{choices: [...]}`; `{low, high, log: true, int: false}`; `{times: [lo, hi]}`: a log range from lo to hi
    times the config's own value (model.width: 6 on lenet, 128 on mlp)."""
    if isinstance(spec, dict):
        if "choices" in spec:
            return _choices(key, list(spec["choices"]))
        if "times" in spec:  # multiples of the selected model's own value: one range for every rung
            times = spec["times"]
            if not (isinstance(times, (list, tuple)) and len(times) == 2 and all(_is_number(v) and v > 0 for v in times)
                    and times[0] < times[1]):
                raise DlrunError(f"sweep.space.{key}: {{times: [lo, hi]}} needs two factors 0 < lo < hi, got {times!r}")
            return Param(key, "log", float(times[0]), float(times[1]), relative=True)
        if "low" in spec and "high" in spec:
            return _range(key, spec["low"], spec["high"], bool(spec.get("log", True)), spec.get("int"))
    elif isinstance(spec, (list, tuple)):
        if len(spec) == 2 and all(_is_number(v) for v in spec):
            return _range(key, spec[0], spec[1], True, None)
        return _choices(key, list(spec))
    raise DlrunError(f"sweep.space.{key}: expected [low, high], a list of choices, {{choices: [...]}} "
                     f"or {{low, high, log}}, got {spec!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _choices(key: str, choices: list[Any]) -> Param:
    if not choices:
        raise DlrunError(f"sweep.space.{key}: an empty list of choices")
    return Param(key, "choice", choices=choices)


def _range(key: str, low: Any, high: Any, log: bool, integer: bool | None) -> Param:
    if not (_is_number(low) and _is_number(high)) or not low < high:
        raise DlrunError(f"sweep.space.{key}: a range needs two numbers low < high, got [{low}, {high}]")
    if log and low <= 0:
        raise DlrunError(f"sweep.space.{key}: a log-scale range needs low > 0, got {low} "
                         f"(use {{low: {low}, high: {high}, log: false}})")
    integer = isinstance(low, int) and isinstance(high, int) if integer is None else bool(integer)
    return Param(key, "log" if log else "linear", float(low), float(high), integer)


def read_space(space: dict[str, Any], groups: dict[str, Any]) -> dict[str, Param]:
    """Flatten the nested `sweep.space` into dotted keys; `sweep.groups` entries are group choices."""
    out: dict[str, Param] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and not ({"choices", "low", "times"} & set(node)):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = parse_param(prefix, node)

    walk("", space or {})
    for name, choices in (groups or {}).items():
        out[name] = _choices(name, list(choices))
    return out


def sobol(n: int, dims: int, seed: int, skip: int = 0) -> list[list[float]]:
    """n scrambled Sobol points in [0, 1)^dims, after the first `skip` (the sequence extends)."""
    if dims == 0:
        return [[] for _ in range(n)]
    from torch.quasirandom import SobolEngine

    engine = SobolEngine(dims, scramble=True, seed=seed)
    if skip:
        engine.fast_forward(skip)
    return engine.draw(n).double().tolist()


def propose(params: list[Param], n: int, seed: int, skip: int = 0) -> list[dict[str, Any]]:
    """n points: choices on a grid (every combination once per pass over it) when the grid fits in
    n, else on the Sobol points too; continuous parameters on Sobol points. Duplicates are dropped.
    Within a pass the combinations go to the points in the order of one more Sobol coordinate, so
    that the choices are spread evenly over the ranges: Sobol points alternate between the halves
    of every range, and a grid cycled in step would tie a choice to one half (a schedule to low
    learning rates)."""
    cont = [p for p in params if p.kind != "choice"]
    cats = [p for p in params if p.kind == "choice"]
    grid = list(itertools.product(*[p.choices for p in cats]))
    on_grid = len(grid) <= max(n, 1)
    if on_grid and not cont:
        n = min(n, len(grid))
    if n <= 0:
        return []
    dims = cont if on_grid else cont + cats
    points = sobol(n, len(dims) + on_grid, seed, skip)
    combo = _grid_combos(points, len(grid), skip, seed) if on_grid else []
    out, seen = [], set()
    for i, u in enumerate(points):
        point = {p.key: p.value(x) for p, x in zip(dims, u)}
        if on_grid:
            point.update(zip([p.key for p in cats], grid[combo[i]]))
        sig = tuple(sorted((k, str(v)) for k, v in point.items()))
        if sig not in seen:
            seen.add(sig)
            out.append(point)
    return out


def _grid_combos(points: list[list[float]], size: int, skip: int, seed: int) -> list[int]:
    """The grid combination of every point: passes of `size` consecutive points (counted from the
    start of the sequence) each take every combination once, by the rank of the points' last
    coordinate; a pass cut short (by n or skip) takes a seeded choice of them."""
    import random

    out = [0] * len(points)
    passes: dict[int, list[int]] = {}
    for i in range(len(points)):
        passes.setdefault((i + skip) // size, []).append(i)
    for rank, members in passes.items():
        order = list(range(size))
        if len(members) < size:
            random.Random(seed * 7919 + rank).shuffle(order)
        for c, i in zip(order, sorted(members, key=lambda i: points[i][-1])):
            out[i] = c
    return out


def split_budget(total: int, shares: list[float]) -> list[int]:
    """Largest-remainder split of `total` trials by `shares` (ties go to the earlier tier)."""
    if total <= 0:
        return [0] * len(shares)
    s = sum(shares)
    raw = [total * x / s for x in shares]
    base = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[: total - sum(base)]:
        base[i] += 1
    return base


def fmt(v: Any) -> str:
    """A value as Hydra's override grammar reads it back."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(float(f"{v:.4g}"))
    return str(v)


@dataclass
class Trial:
    stage: str
    round: int
    seed: int
    values: dict[str, str]          # every swept key of this trial: incumbents + this stage's point
    trial: int = -1
    metric: float = float("nan")
    time: float = 0.0
    status: str = "pending"         # completed | failed
    error: str = ""
    run_dir: str = ""
    launch: dict[str, str] = field(default_factory=dict)  # how it runs, not what: stop_after, resume

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in sorted({**self.values, **self.launch}.items())] + [f"seed={self.seed}"]

    @property
    def full(self) -> bool:
        """Trained for the whole `epochs` (not a successive-halving rung paused by stop_after)."""
        return "stop_after" not in self.launch

    @property
    def key(self) -> str:
        return " ".join(self.overrides)

    @property
    def ok(self) -> bool:
        return self.status == "completed" and math.isfinite(self.metric)

    def row(self) -> dict[str, Any]:
        return {"trial": self.trial, "stage": self.stage, "round": self.round, "seed": self.seed,
                "overrides": " ".join(f"{k}={v}" for k, v in sorted(self.values.items())),
                "metric": "" if math.isnan(self.metric) else f"{self.metric:.6g}", "time": f"{self.time:.2f}",
                "status": self.status, "error": self.error, "run_dir": self.run_dir,
                "launch": " ".join(f"{k}={v}" for k, v in sorted(self.launch.items()))}


def read_trials(path: Path) -> dict[str, Trial]:
    """Finished trials of an earlier run of the same sweep, by key (what resume skips)."""
    if not path.exists():
        return {}
    out: dict[str, Trial] = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            values = dict(kv.split("=", 1) for kv in r["overrides"].split()) if r["overrides"] else {}
            t = Trial(r["stage"], int(r["round"]), int(r["seed"]), values, int(r["trial"]),
                      float(r["metric"]) if r["metric"] else float("nan"), float(r["time"] or 0),
                      r["status"], r["error"], r["run_dir"],
                      dict(kv.split("=", 1) for kv in (r.get("launch") or "").split()))
            out[t.key] = t
    return out


def write_trials(path: Path, trials: list[Trial]) -> None:
    def write(f) -> None:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for t in trials:
            w.writerow(t.row())
    atomic_write(path, write)
