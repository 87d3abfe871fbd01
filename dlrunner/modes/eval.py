"""mode=eval: a checkpoint's own job (same data pipeline, model, tricks) scored on one split."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dlrunner.modes import ModeRun
from dlrunner.reporting.console import Reporter


def run(job: ModeRun) -> float:
    return evaluate_checkpoint(job.cfg, job.run_dir, job.choices, job.out)


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path, choices: dict[str, str], out: Reporter) -> float:
    """Rebuild the checkpoint's job and evaluate `split` (val or test); writes eval.json, returns the accuracy."""
    from dlrunner.build import rebuild
    from dlrunner.engine import checkpoint
    from dlrunner.engine.evaluate import score_split
    from dlrunner.reporting.files import write_json

    job = rebuild(checkpoint.load(cfg.ckpt), str(cfg.device), out.warn)
    split = job.val if cfg.split == "val" else job.test
    res = score_split(job, cfg.split)
    res_all = {"checkpoint": str(checkpoint.resolve(cfg.ckpt)), "split": cfg.split, "samples": split.num_samples, **res}
    write_json(res_all, run_dir / "eval.json")
    for k, v in res.items():
        out.info(f"{k} {v:.4f}")
    out.info(f"{cfg.split}: {split.num_samples} samples from {res_all['checkpoint']}")
    return res[f"{cfg.split}/acc"]
