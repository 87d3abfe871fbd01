"""mode=final: the retrain that ends a search. The job as configured (e.g. a sweep's `best.yaml`)
trains on the union of its train and val splits for `epochs` epochs, with no validation and no
choice of epoch (the last weights are the model), and is then scored once on the test split, the
same split an ordinary run of that config holds out. modes/train.py does the training; this module
holds what differs: a pass counter on the test batches, the one scoring pass, and what
summary.json and the console say about it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from omegaconf import DictConfig

from dlrunner.reporting import analysis
from dlrunner.engine.evaluate import score_split
from dlrunner.modes import ModeRun

if TYPE_CHECKING:
    from dlrunner.engine.job import Job


class CountedPasses:
    """Batches that count the passes made over them (the test split's count goes to summary.json)."""

    def __init__(self, batches: Any):
        self.batches, self.passes = batches, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __getattr__(self, name: str) -> Any:  # num_samples, batch_size...
        return getattr(self.batches, name)

    def iterate(self, epoch: int = 0, start: int = 0) -> Iterator:
        self.passes += 1
        return self.batches.iterate(epoch, start)


def score_once(job: Job) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Test metrics from a single pass, scored as any split is (dlrunner.engine.evaluate), plus the
    logits and labels that the error analysis needs, so that it does not read the split again."""
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    res = score_split(job, "test", keep=kept)
    return res, torch.cat([o for o, _ in kept]), torch.cat([y for _, y in kept])


def score_test(job: Job, run_dir: Path, warn: Callable[[str], None]) -> tuple[dict[str, float], dict[str, Any]]:
    """The test metrics, and the confusion matrix, per-class scores and top losses on the test
    split (confusion.png, top_losses.png) from the same pass."""
    metrics, logits, labels = score_once(job)
    return metrics, analysis.after_training(job, run_dir, warn, split="test", scored=(logits, labels))


def test_metric(optimized: str) -> str:
    """The test split's counterpart of the optimized metric: val/acc -> test/acc (train/* stay)."""
    return "test/" + optimized.split("/", 1)[1] if optimized.startswith("val/") else optimized


def record(cfg: DictConfig, job: Job, tested: dict[str, float]) -> dict[str, Any]:
    """summary.json entries: what the model was trained on, and the test split's one scoring.
    `optimized_metric`/`value` become the test counterpart (what Hydra gets back)."""
    n_val = len(job.data.val)
    out: dict[str, Any] = {"retrain": {
        "trained_on": ["train", "val"], "train_samples": len(job.data.train),
        "from": {"train": len(job.data.train) - n_val, "val": n_val}, "epochs": int(cfg.epochs),
        "selection": "none: the last epoch's weights are the model",
        "test_samples": len(job.data.test), "test_passes": job.test.passes, "test": tested}}
    metric = test_metric(str(cfg.optimized_metric))
    if metric != cfg.optimized_metric:
        out |= {"optimized_metric": metric, "value": tested.get(metric)}
    return out


def statement(summary: dict[str, Any]) -> str:
    """The console's last word on a final run: what it trained on and the test split's one score."""
    r = summary["retrain"]
    passes, epochs = r["test_passes"], r["epochs"]
    once = "once" if passes == 1 else f"{passes} times"
    scores = ", ".join(f"{k} {v:.4f}" for k, v in r["test"].items())
    return (f"final: trained on train+val ({r['train_samples']:,} = {r['from']['train']:,} + {r['from']['val']:,} "
            f"samples) for {epochs} epoch{'s' * (epochs != 1)}, no validation, no epoch picked; the test split "
            f"({r['test_samples']:,} samples) was scored {once}, with the final weights: {scores}\n"
            f"model: {Path(summary['run_dir']) / 'checkpoints' / 'last.pt'} "
            f"(mode=eval | predict | export ckpt={summary['run_dir']})")


def run(job: ModeRun) -> float:
    """Train as mode=train does (it reads cfg.mode to train on train+val), then the one test score."""
    from dlrunner.modes.train import train

    return train(job.cfg, job.run_dir, job.choices, job.out)
