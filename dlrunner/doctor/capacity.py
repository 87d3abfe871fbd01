"""The capacity check: with regularization off, the model must memorize a small training subset
(>= 99% train accuracy). When it falls short, the evidence names the limit that stopped it (the
time budget or the step budget) and the setting that raises it, so a slow check is not mistaken
for a model too small; BatchNorm statistics are re-estimated on the subset before it is scored
(a few steps leave the running averages behind the weights: eval-mode accuracy would understate
what the net has memorized)."""
from __future__ import annotations

import torch
from torch import nn

from dlrunner.doctor.core import Exam, Finding, set_dropout
from dlrunner.doctor.training import limited

SMALL_BATCH = 16  # BatchNorm's statistics over fewer samples than this are too noisy (the guides: 16-32 and up)


def capacity(ex: Exam) -> Finding:
    f = Finding("capacity", "Capacity")
    n = int(ex.opts.get("capacity_samples", 128))
    xs, ys = ex.sample(ex.job.train, n)
    bs = min(ex.job.data.batch_size, 32)  # more updates per pass over a small subset
    per_epoch = max(1, -(-len(ys) // bs))
    asked = int(ex.opts.get("capacity_steps", 1000))
    steps, cut = limited(ex, asked, 0.3, floor=120)
    epochs = max(1, steps // per_epoch)
    tries = []
    for factor in (1.0, 10.0):  # the question is capacity, not the LR: a faster LR may answer it
        acc, hist = _memorize(ex, xs, ys, bs, epochs, factor)
        tries.append({"lr": ex.lr * factor, "train_acc": acc, "epochs": len(hist), "history": hist})
        if acc >= 0.99:
            break
    limit = (f"the time budget ({cut}) allowed {epochs} epochs of the {max(1, asked // per_epoch)} that "
             f"doctor.capacity_steps={asked} asks for: raise doctor.time_budget (0 = no limit)") if cut else \
        (f"the step budget doctor.capacity_steps={asked} ({epochs} epochs of {per_epoch} steps) ran out: "
         "raise doctor.capacity_steps")
    f.details |= {"samples": len(ys), "max_epochs": epochs, "tries": tries, "limit": "time" if cut else "steps"}
    last = tries[-1]
    ev = (f"{len(ys)} training samples, regularization off: {100 * last['train_acc']:.1f}% train accuracy after "
          f"{last['epochs']} epochs at lr {last['lr']:.1e}")
    if len(tries) > 1:
        ev += f" (at lr {tries[0]['lr']:.1e}: {100 * tries[0]['train_acc']:.1f}% in {tries[0]['epochs']} epochs)"
    small = _small_batchnorm(ex.model, bs)
    if small and last["train_acc"] < 0.99:
        f.details["small_batchnorm"] = bs
        limit += (f"; and BatchNorm normalizes over batches of {bs}: batch too small for BatchNorm (what the net "
                  "learns on statistics of so few samples does not hold under the running ones eval mode uses)")
    bn_fix = f"data.batch_size={2 * SMALL_BATCH} or more (or GroupNorm/LayerNorm in the model)"
    best = max(tries, key=lambda t: t["train_acc"])
    rising = len(best["history"]) > 1 and best["history"][-1] > best["history"][max(0, len(best["history"]) - 4)]
    if last["train_acc"] >= 0.99:
        f.add("pass", ev)
    elif cut and rising and best["train_acc"] >= 0.5:
        f.add("skip", ev + f"; still rising when {limit}: inconclusive, not a capacity verdict")
    elif last["train_acc"] >= 0.9:
        f.add("warn", ev + f" (short of 99%; {limit})", bn_fix if small else
              "a bigger model (model.width / model.depth), or the setting named to train longer")
    else:
        f.add("fail", ev + f": the model cannot memorize a small subset ({limit})", bn_fix if small else
              "a bug blocks learning (see the checks above) or the model is far too small")
    return f


def _small_batchnorm(model: nn.Module, bs: int) -> bool:
    return bs < SMALL_BATCH and any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                                    for m in model.modules())


def _memorize(ex: Exam, xs: torch.Tensor, ys: torch.Tensor, bs: int, epochs: int, factor: float):
    ex.reset()
    saved = set_dropout(ex.model, 0.0)
    opt = ex.optimizer(factor, weight_decay=0.0)
    acc, hist = 0.0, []
    g = torch.Generator().manual_seed(2)
    try:
        with torch.random.fork_rng(devices=[]):
            for _ in range(epochs):
                order = torch.randperm(len(ys), generator=g).to(ys.device)
                for idx in order.split(bs):
                    if len(idx) > 1:
                        ex.step(opt, xs[idx], ys[idx])
                acc = _subset_acc(ex, xs, ys, bs)
                hist.append(acc)
                if acc >= 0.99:
                    break
    finally:
        set_dropout(ex.model, None, saved)
        ex.reset()
    return acc, hist


@torch.no_grad()
def _subset_acc(ex: Exam, xs: torch.Tensor, ys: torch.Tensor, bs: int) -> float:
    _recalibrate_bn(ex, xs, bs)
    ex.model.eval()
    correct = 0
    for x, y in zip(xs.split(256), ys.split(256)):
        with ex.job.precision.autocast():
            correct += int((ex.model(x).argmax(1) == y).sum())
    ex.model.train()
    return correct / len(ys)


@torch.no_grad()
def _recalibrate_bn(ex: Exam, xs: torch.Tensor, bs: int) -> None:
    """BatchNorm running statistics as the exact average over the subset, in training batches."""
    bns = [m for m in ex.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    ex.model.train()
    with torch.random.fork_rng(devices=[]), ex.job.precision.autocast():
        for x in xs.split(bs):
            if len(x) > 1:
                ex.model(x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
