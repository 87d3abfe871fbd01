"""The one evaluation pass: eval mode (dropout off, BatchNorm running statistics), the job's
autocast, the tricks' predictions (TTA, ensembles, averaged weights) and, when those differ from
the model's own, the plain forward too. Validation, the test score, error analysis and predict
all score through `passes`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import torch
from torch import nn

from dlrunner.engine.meter import Meter
from dlrunner.engine.precision import Precision

if TYPE_CHECKING:
    from dlrunner.engine.job import Job


@torch.no_grad()
def passes(model: nn.Module, batches: Iterable[tuple], precision: Precision, predict: Callable | None = None,
           plain: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """(scores, plain scores or None, y) per batch of (x, y); the model is in eval mode for the
    pass and back in its former mode after it."""
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            with precision.autocast():
                out = predict(model, x) if predict else model(x)  # (B, K) logits
                raw = model(x) if plain else None
            yield out, raw, y
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, batches, loss_fn: Callable, precision: Precision, prefix: str = "val",
             predict: Callable | None = None, reduce: bool = False, counts: dict | None = None,
             plain: bool = False, keep: list | None = None) -> dict[str, float]:
    """Loss and accuracy over a whole split; with `plain`, the plain model's as `<prefix>/plain_*`.
    reduce: `batches` is one rank's shard; sum over ranks. counts: gets {prefix: samples seen}.
    keep: gets (logits, labels) on the CPU per batch, for the error analysis."""
    device = next(model.parameters()).device
    meter, plain_meter = Meter(device), Meter(device)
    for out, raw, y in passes(model, (b for _, b in batches.iterate(0)), precision, predict, plain):
        meter.update(loss_fn(out.float(), y), out, y)
        if raw is not None:
            plain_meter.update(loss_fn(raw.float(), y), raw, y)
        if keep is not None:
            keep.append((out.float().cpu(), y.cpu()))
    if reduce:
        meter, plain_meter = meter.reduced(), plain_meter.reduced() if plain else plain_meter
    if counts is not None:
        counts[prefix] = meter.n
    res = meter.result(prefix)
    if plain:
        res |= {f"{prefix}/plain_{k.split('/')[1]}": v for k, v in plain_meter.result(prefix).items()}
    return res


def score_split(job: Job, split: str, shard=None, counts: dict | None = None, keep: list | None = None) -> dict[str, float]:
    """A job's split scored with the tricks' predictions, and the plain model's when a trick changes
    them. shard: this rank's part of the split in a data-parallel run (metrics summed over ranks)."""
    batches = shard if shard is not None else (job.val if split == "val" else job.test)
    return evaluate(job.model, batches, job.loss_fn, job.precision, split, job.tricks.predict, shard is not None,
                    counts, plain=job.tricks.changes_predictions, keep=keep)


def split_logits(job: Job, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) for every sample of a split in its stored order, scored as score_split scores."""
    batches = job.val if split == "val" else job.test
    scored = [(out.float().cpu(), y.cpu()) for out, _, y in
              passes(job.model, (b for _, b in batches.iterate(0)), job.precision, job.tricks.predict)]
    return torch.cat([o for o, _ in scored]), torch.cat([y for _, y in scored])
