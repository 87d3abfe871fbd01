"""Checkpoints: written atomically, read back with a clear message when foreign or damaged."""
from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlrunner.errors import DlrunError
from dlrunner.reporting.files import atomic_make, atomic_write

if TYPE_CHECKING:
    from dlrunner.engine.job import Job
    from dlrunner.engine.loop import TrainState
    from dlrunner.engine.meter import Meter

FORMAT = "dlrunner-checkpoint/1"


def save(payload: dict[str, Any], path: str | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over the target:
    a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save({"format": FORMAT, **payload}, f), binary=True, fsync=True)


def link(src: Path, dst: Path) -> None:
    """Make dst the same checkpoint as src without rewriting it: a hard link (saves replace files,
    never write into them, so dst keeps this version), or a copy where links are not supported."""
    def make(tmp: Path) -> None:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    atomic_make(dst, make)


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


def snapshot(obj: Any) -> Any:
    """A copy of a (nested) state that later training steps cannot change: tensors copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


class Checkpointer:
    """last.pt / best.pt for one run. Epoch-end states are kept in memory and written at most every
    `interval` seconds, at the end, on interrupt and on a crash, so short epochs do not pay for a
    disk write each (interval 0: write every epoch)."""

    def __init__(self, folder: Path, interval: float):
        self.folder, self.interval = Path(folder), float(interval)
        self.last_write = time.monotonic()
        self.pending: dict | None = None  # newest epoch-end state not yet on disk
        self.best: dict | None = None  # best state not yet on disk
        self.seconds = 0.0  # spent copying and writing states (summary.json timings)

    def epoch_end(self, state: dict, improved: bool) -> None:
        t0 = time.perf_counter()
        due = time.monotonic() - self.last_write >= self.interval
        state = state if due else snapshot(state)  # written now: no copy needed
        self.pending = state
        if improved:
            self.best = state
        self.seconds += time.perf_counter() - t0
        if due:
            self.flush()

    def flush(self) -> None:
        t0 = time.perf_counter()
        if self.pending is not None:
            save(self.pending, self.folder / "last.pt")
            if self.best is self.pending:
                link(self.folder / "last.pt", self.folder / "best.pt")
            elif self.best is not None:
                save(self.best, self.folder / "best.pt")
        self.pending = self.best = None
        self.last_write = time.monotonic()
        self.seconds += time.perf_counter() - t0

    def save_now(self, state: dict) -> None:
        """Flush what is pending (best.pt), then write this state (e.g. mid-epoch) as last.pt."""
        self.flush()
        t0 = time.perf_counter()
        save(state, self.folder / "last.pt")
        self.seconds += time.perf_counter() - t0


class Discard:
    """The Checkpointer of ranks 1..N-1 of a data-parallel run: rank 0 alone writes."""

    seconds = 0.0

    def epoch_end(self, state: dict, improved: bool) -> None:
        pass

    def flush(self) -> None:
        pass

    def save_now(self, state: dict) -> None:
        pass


def payload(job: Job, state: TrainState, meter: Meter, config_yaml: str) -> dict[str, Any]:
    """What a checkpoint holds: everything a resumed run needs to continue exactly where this one is."""
    return {"model": job.base_model.state_dict(), "optimizer": job.optimizer.state_dict(),
            "schedule": job.schedule.state_dict(), "precision": job.precision.state_dict(),
            "tricks": job.tricks.state_dict(), "rng": rng_state(), "meter": meter.state_dict(),
            "state": {"epoch": state.epoch, "batch": state.batch, "step": state.step, "history": state.history,
                      "best": state.best, "best_epoch": state.best_epoch},
            "config": config_yaml, "data": job.data.meta()}


def restore(job: Job, ckpt: dict, state: TrainState) -> Meter:
    """Put a checkpoint's payload back into a freshly built job and state; the partial epoch's meter."""
    from dlrunner.engine.meter import Meter

    job.base_model.load_state_dict(ckpt["model"])
    job.tricks.load_state_dict(ckpt["tricks"])  # first: a trick may have swapped the optimizer or schedule
    job.optimizer.load_state_dict(ckpt["optimizer"])
    job.schedule.load_state_dict(ckpt["schedule"])
    job.precision.load_state_dict(ckpt["precision"])
    for k, v in ckpt["state"].items():
        setattr(state, k, v)
    set_rng_state(ckpt["rng"])
    return Meter(job.device, ckpt["meter"] if state.batch else None)
