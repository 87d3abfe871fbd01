"""The run folders mode=compare and dlrun-report read: which folders hold a run, and what each one
says about itself (its overrides, config, status, metrics and history)."""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlrunner.engine.metric import minimize

SKIP_DIRS = {"checkpoints", "tensorboard", "mlruns", "__pycache__"}  # never hold a run; can be large


@dataclass
class Run:
    """What one run folder says about itself."""

    path: Path
    name: str  # relative to the scanned folder
    overrides: dict[str, str]
    config: dict[str, Any]
    choices: dict[str, str]
    status: str
    optimized_metric: str
    value: float | None
    best_epoch: int | None
    epochs_run: int
    wall_time: float | None
    fit: str | None
    final: dict[str, float]
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)

    def setting(self, key: str) -> str:
        """The value of an override key in this run: its own override, else its group choice or config value."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return str(self.choices[key])
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return ""
            node = node[part]
        return str(node)


def is_run(folder: Path) -> bool:
    return (folder / "summary.json").is_file() or ((folder / ".hydra").is_dir() and (folder / "metrics.csv").is_file())


def find_runs(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every run folder under root (root itself included), in path order; a run's own sub-folders are not searched."""
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for here, dirs, _ in os.walk(root):
        folder = Path(here)
        if skip is not None and folder.resolve() == skip:
            dirs.clear()
            continue
        if is_run(folder):
            found.append(folder)
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
    return sorted(found)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """['optim.lr=1e-3', '+x=1', '~y'] -> {'optim.lr': '1e-3', 'x': '1', 'y': '<deleted>'}; hydra.* is not the job's."""
    out = {}
    for item in items or []:
        key, eq, value = str(item).partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("+~")
        if key.startswith("hydra.") or key == "hydra":
            continue
        out[key] = value if eq and not deleted else "<deleted>"
    return out


def read_history(path: Path) -> list[dict[str, float]]:
    try:
        with path.open(newline="") as f:
            return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except OSError:
        return []


def load_run(path: Path, root: Path) -> Run:
    summary = _read_json(path / "summary.json")
    config = _read_yaml(path / ".hydra" / "config.yaml") or {}
    hydra_cfg = _read_yaml(path / ".hydra" / "hydra.yaml") or {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    history = read_history(path / "metrics.csv")
    metric = summary.get("optimized_metric") or config.get("optimized_metric") or "val/acc"
    if summary:
        final, best = summary.get("final") or {}, summary.get("best") or {}
        value, best_epoch = _num(summary.get("value")), summary.get("best_epoch")
        epochs_run, wall_time = int(summary.get("epochs_run") or 0), _num(summary.get("wall_time"))
        status, fit = str(summary.get("status", "?")), (summary.get("fit") or {}).get("verdict")
    else:  # still running, or killed before it could write a summary: what metrics.csv holds so far
        scored = [r for r in history if r.get(metric) is not None]
        pick = min if minimize(metric) else max
        best = pick(scored, key=lambda r: r[metric]) if scored else {}
        final = history[-1] if history else {}
        value, best_epoch = best.get(metric), best.get("epoch")
        epochs_run, wall_time, status, fit = len(history), None, "unfinished", None
    name = str(path.relative_to(root)) if path != root else path.name
    return Run(path=path, name=name, overrides=parse_overrides(_read_yaml(path / ".hydra" / "overrides.yaml")),
               config=config, choices={str(k): v for k, v in choices.items()}, status=status,
               optimized_metric=metric, value=value, best_epoch=int(best_epoch) if best_epoch is not None else None,
               epochs_run=epochs_run, wall_time=wall_time, fit=fit,
               final={k: _num(v) for k, v in final.items()}, best={k: _num(v) for k, v in best.items()},
               history=history)


def split_overrides(runs: list[Run]) -> tuple[dict[str, str], list[str]]:
    """(common, differing): keys every run overrides with the same value, and the keys whose value differs."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    common, differing = {}, []
    for k in keys:
        if all(k in r.overrides for r in runs) and len({r.overrides[k] for r in runs}) == 1:
            common[k] = runs[0].overrides[k]
        else:
            differing.append(k)
    return common, differing
