"""Checkpoints: written atomically, read back with a clear message when foreign or damaged."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from dlrunner.errors import DlrunError

FORMAT = "dlrunner-checkpoint/1"


def save(payload: dict[str, Any], path: str | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over the target:
    a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (-> its checkpoints/last.pt)."""
    p = Path(str(path)).expanduser()
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if not p.is_file():
        raise DlrunError(f"no checkpoint at {p}")
    return p


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a dlrun checkpoint; one line of explanation for anything else."""
    p = resolve(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, UnpicklingError... by damage
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in first:
            raise DlrunError(f"{p} is not a dlrun checkpoint (it holds arbitrary Python objects)") from None
        raise DlrunError(f"{p} is truncated or not a torch checkpoint ({first[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        keys = ", ".join(map(str, list(ckpt)[:5])) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DlrunError(f"{p} is not a dlrun checkpoint (found {keys}; expected format {FORMAT})")
    return ckpt


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
