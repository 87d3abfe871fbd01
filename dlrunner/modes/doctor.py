"""mode=doctor: the guides' bug checklist on the configured job. The checks (dlrunner/doctor/) take
the built job and plain values; the config is read here: the doctor's options, the values a repair
starts from, and the rebuild of the job with a remedy's overrides applied."""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dlrunner.modes import ModeRun


def run(job: ModeRun) -> float:
    """Examine the job and write doctor.md / doctor.json; exit status 1 when a check fails (a CI gate)."""
    status = examine_config(job.cfg, job.run_dir, job.choices, job.out)
    if status:
        sys.exit(status)
    return 0.0


def examine_config(cfg: DictConfig, run_dir: Path, choices: dict[str, str], out) -> int:
    """Build the configured job, examine it, report; returns the exit status (1 if a check failed)."""
    from dlrunner import doctor
    from dlrunner.build import build_job, pick_device

    t0 = time.time()
    opts = OmegaConf.to_container(cfg.doctor, resolve=True) if cfg.get("doctor") is not None else {}
    job = build_job(cfg, pick_device(str(cfg.device)), out.warn, choices)
    out.info(f"dlrun doctor: {job.data.name} {job.data.sizes()} -> {type(job.base_model).__name__} on "
             f"{job.device}, {job.precision.name}; run folder {run_dir}")
    ex = doctor.examine(job, run_dir, opts)
    if opts.get("repair"):
        ex.repairs = attempt_repairs(ex, cfg, choices, run_dir)
    return doctor.report(ex, run_dir, out.console, time.time() - t0, OmegaConf.to_yaml(cfg, resolve=True))


def attempt_repairs(ex, cfg: DictConfig, choices: dict[str, str], run_dir: Path) -> list:
    """doctor.repair=true (dlrunner.doctor.repair) on an examined job: each remedy is re-run on the
    job built from `cfg` with the remedy's overrides applied."""
    from dlrunner.build import build_job
    from dlrunner.doctor import repair

    def rebuild(overrides: list[str]):
        fixed = copy.deepcopy(cfg)
        for o in overrides:
            key, value = o.split("=", 1)
            OmegaConf.update(fixed, key, _parse(value), merge=True)
        return build_job(fixed, ex.device, lambda m: None, choices)
    return repair.attempt(ex, knobs(cfg), rebuild, run_dir)


def knobs(cfg: DictConfig):
    """The configured values the remedies start from (dlrunner.doctor.repair.Knobs)."""
    from dlrunner.doctor.repair import Knobs

    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    batch = str(data.get("batch_size") or 0)
    return Knobs(normalize=data.get("normalize"), init=str(model.get("init")) if "init" in model else None,
                 dropout=float(model.get("dropout") or 0) if "dropout" in model else None,
                 batch_size=int(batch) if "data" in cfg and batch.isdigit() else None)


def _parse(value: str):
    """An override's value as Hydra would type it: int, float, bool or text."""
    try:
        v = float(value)
        return int(v) if value.lstrip("-").isdigit() else v
    except ValueError:
        return {"true": True, "false": False}.get(value, value)
