"""resume=auto|PATH for mode=train/final: the job's identity (its config, less the keys that only
steer the run), finding the checkpoint to continue, and carrying the earlier part into the new
run folder."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dlrunner.engine import checkpoint
from dlrunner.moved import former_paths
from dlrunner.reporting import rundir
from dlrunner.reporting.console import Reporter
from dlrunner.reporting.files import write_rows

IGNORED_FOR_RESUME = ("resume", "mode", "ckpt", "split", "log_every", "plots", "stop_after", "out_dir", "checkpoint_interval", "eval_test",
                      "logger", "dir", "sort", "csv", "input", "format", "doctor", "climb",
                      "trainer",  # the device count: data.batch_size is global, so a run resumes on any count
                      "watch", "watch_every")  # the watchdog only reads the run


def config_key(cfg: DictConfig) -> str:
    """The job's identity for resume=auto: the resolved config minus run-control keys. A mode=final
    run keeps its mode: it trains on train+val, never the same job as an ordinary run. The builders
    that moved into engine/ and reporting/ keep their former paths here (dlrunner.moved)."""
    d = OmegaConf.to_container(cfg, resolve=True)
    final = d.get("mode") == "final"
    for k in IGNORED_FOR_RESUME:
        d.pop(k, None)
    for k in ("on_device", "num_workers", "root"):  # where batches come from, not what they hold
        (d.get("data") or {}).pop(k, None)
    if final:
        d["mode"] = "final"
    if "data" in d:  # data before model, the order earlier versions wrote (the defaults list now has model first)
        d = {"data": d.pop("data"), **d}
    return former_paths(OmegaConf.to_yaml(OmegaConf.create(d)))


def find_resume(cfg: DictConfig, run_dir: Path, key: str, out: Reporter) -> Path | None:
    """The checkpoint to continue (claimed for this run), or None for a fresh start."""
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        found = rundir.find_resumable(cfg.out_dir, key, exclude=run_dir)
        if found is None:
            out.info(f"resume=auto: no unfinished run with this config under {cfg.out_dir}/; starting a new run")
            return None
    path = checkpoint.resolve(found if cfg.resume == "auto" else cfg.resume)
    rundir.claim(path.parent.parent, run_dir)  # one process at a time continues a run
    return path


def carry_over(resume_path: Path, ckdir: Path, history: list[dict], run_dir: Path) -> None:
    """A resumed run's folder holds the whole run from its first moment: the epochs before the
    interruption in metrics.csv, and best.pt when the best epoch came before it (the resumed part
    may never beat it)."""
    if history:
        write_rows(history, run_dir / "metrics.csv")
    old_best = resume_path.parent / "best.pt"
    if old_best.is_file() and not (ckdir / "best.pt").exists():
        checkpoint.link(old_best, ckdir / "best.pt")
