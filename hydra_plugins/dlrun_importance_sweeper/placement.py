"""Several small trials on one GPU, `sweep.trials_per_gpu=N`: a trial that leaves most of a device
idle (a small model, a small batch) runs beside N-1 others.

- hydra/launcher=ray: every trial asks Ray for 1/N of a GPU (fractional `num_gpus`), so Ray
  places N trials per device and spreads them over the cluster's GPUs.
- hydra/launcher=joblib: N worker processes per local GPU (`n_jobs`), each trial pinned to
  device `cuda:(i mod GPUs)` of its batch, so the devices share the load evenly.
- TPE proposes `N x GPUs` points at a time (sweep.batch), so that every worker has a trial.
An explicit `hydra.launcher.ray.remote.num_gpus`, `hydra.launcher.n_jobs` or `sweep.batch` wins."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, open_dict, read_write

from dlrunner.errors import DlrunError


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def per_gpu(config: DictConfig) -> int | None:
    n = config.get("sweep", {}).get("trials_per_gpu")
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DlrunError(f"sweep.trials_per_gpu must be null or an integer >= 1, got {n!r}")
    return n


def launcher_kind(config: DictConfig) -> str:
    target = str((config.hydra.get("launcher") or {}).get("_target_", ""))
    return "ray" if "RayLauncher" in target else "joblib" if "JoblibLauncher" in target else "other"


def apply(config: DictConfig, overrides: list[str]) -> int | None:
    """Set the launcher's resources for `sweep.trials_per_gpu` (before the launcher is built); returns
    the batch TPE should propose, or None when the setting is off. `overrides`: the command line's
    hydra overrides (an explicit n_jobs wins)."""
    n = per_gpu(config)
    if n is None:
        return None
    gpus = max(1, cuda_count())
    kind = launcher_kind(config)
    launcher = config.hydra.launcher
    with read_write(launcher), open_dict(launcher):
        if kind == "ray" and "num_gpus" not in launcher.ray.remote:
            launcher.ray.remote.num_gpus = 1.0 / n
        elif kind == "joblib" and not any(o.startswith("hydra.launcher.n_jobs=") for o in overrides):
            launcher.n_jobs = n * gpus
    return n * gpus


def devices(kind: str, n_jobs: int, count: int) -> list[list[str]]:
    """Per job of a batch, the device override that spreads local workers over `count` GPUs (none
    for Ray, which places trials itself, or without several GPUs)."""
    if kind == "ray" or count < 2:
        return [[] for _ in range(n_jobs)]
    return [[f"device=cuda:{i % count}"] for i in range(n_jobs)]


def describe(config: DictConfig) -> dict[str, Any]:
    """What the sweep asked for, for summary files and tests."""
    launcher = config.hydra.get("launcher") or {}
    return {"trials_per_gpu": per_gpu(config), "launcher": launcher_kind(config),
            "num_gpus": (launcher.get("ray") or {}).get("remote", {}).get("num_gpus"),
            "n_jobs": launcher.get("n_jobs")}


def parallel(config: DictConfig, batch: int) -> int:
    """Trials the launcher runs at once (what a time budget's estimates divide by): joblib's n_jobs
    (-1: every core), one on Hydra's basic launcher, else the batch the sweep proposes (Ray, SLURM)."""
    import os

    launcher = config.hydra.get("launcher") or {}
    kind = launcher_kind(config)
    if kind == "joblib":
        n = int(launcher.get("n_jobs") or 1)
        return max(1, n if n > 0 else (os.cpu_count() or 1) + 1 + n)
    return 1 if "BasicLauncher" in str(launcher.get("_target_", "")) else max(1, batch)
