"""LR range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"; fastai's
`lr_find`): train for a few batches while the LR grows exponentially, watch the smoothed loss,
and pick an LR from the curve. Suggested: start_lr 1e-7, end_lr 10, num_it 100, rule "valley"
(fastai's default); with trick=[lr_finder,onecycle] the suggestion becomes the cycle's max_lr.

The test trains the real model, so everything it touches (weights, BatchNorm buffers, optimizer
state and hyper-parameters, schedule, GradScaler, RNG streams) is put back bit for bit before
training starts: fastai #3013 / #2892 and Lightning #6675 are finders that leaked into the run."""
from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from dlrunner.reporting import plots
from dlrunner.engine.checkpoint import rng_state, set_rng_state, snapshot
from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick
from dlrunner.tricks.context import Parts

RULES = ("valley", "steepest", "min_div10")


def range_test(model, batches, loss_fn, optimizer, precision, *, start_lr: float = 1e-7, end_lr: float = 10.0,
               num_it: int = 100, beta: float = 0.98, diverge: float = 4.0) -> tuple[list[float], list[float]]:
    """One optimizer step per batch at lr = start_lr * (end_lr/start_lr)**(i/(num_it-1)) for all groups.
    Returns the LRs and the debiased EMA of the loss; stops when it is non-finite or above
    `diverge` x the best so far (that last point is kept: it marks where the loss blew up)."""
    model.train()
    growth = (end_lr / start_lr) ** (1.0 / max(num_it - 1, 1))
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    steps = (b for epoch in itertools.count() for _, b in batches.iterate(epoch))  # as many epochs as needed
    for i, (x, y) in zip(range(num_it), steps):
        lr = start_lr * growth**i
        for group in optimizer.param_groups:
            group["lr"] = lr
        with precision.autocast():
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss)
        precision.unscale(optimizer)
        precision.step(optimizer)
        avg = beta * avg + (1 - beta) * float(loss.detach())
        smooth = avg / (1 - beta ** (i + 1))  # debiased: the EMA starts at 0
        if not math.isfinite(smooth):
            break
        lrs.append(lr)
        losses.append(smooth)
        best = min(best, smooth)
        if smooth > diverge * best:
            break
    return lrs, losses


def suggest(lrs: list[float], losses: list[float], rule: str = "valley", num_it: int | None = None) -> float:
    """An LR from a range-test curve, after dropping the first num_it/10 points (noise while the
    EMA warms up) and the last 5 (the blow-up), as fastai does."""
    if rule not in RULES:
        raise DlrunError(f"lr_finder rule must be one of {', '.join(RULES)}; got {rule!r}")
    skip = (num_it or len(lrs)) // 10
    lr, loss = torch.tensor(lrs[skip:-5], dtype=torch.float64), torch.tensor(losses[skip:-5], dtype=torch.float64)
    if len(lr) < 3:
        raise DlrunError(f"lr_finder: the loss diverged after {len(lrs)} steps (lr {lrs[-1]:.1e}), too early to "
                         "read the curve; lower trick.lr_finder.start_lr or raise num_it")
    if rule == "min_div10":
        return float(lr[loss.argmin()]) / 10
    if rule == "steepest":  # slope against log10 LR (against plain LR it favours the large LRs)
        slope = loss.diff() / lr.log10().diff()
        return float(lr[1:][slope.argmin()])
    return float(lr[_valley_index(loss.tolist())])


def _valley_index(loss: list[float]) -> int:
    """fastai's valley: the longest decreasing subsequence of the curve (robust to noise, unlike a
    strictly contiguous run); the point halfway into the stretch of that length ending where it ends."""
    longest = [1] * len(loss)  # longest decreasing subsequence ending at i
    for i in range(1, len(loss)):
        longest[i] = 1 + max((longest[j] for j in range(i) if loss[j] > loss[i]), default=0)
    end = max(range(len(loss)), key=lambda i: (longest[i], -i))  # first of the longest
    start = end - longest[end] + 1
    return start + (end - start) // 2


def plot(lrs: list[float], losses: list[float], value: float, rule: str, path: str | Path) -> Path:
    """Smoothed loss against LR (log axis), the suggestion as a vertical line; the y axis shows the
    curve up to the blow-up rather than the blow-up itself."""
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses, lw=1.5, label="smoothed loss")
    ax.axvline(value, color="red", ls="--", label=f"{rule}: lr {value:.2e}")
    ax.set_xscale("log")
    body = losses[:-5] or losses  # the blow-up at the end would squash the curve: clip it
    lo, hi = min(losses), max(body)
    if hi > lo:
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.15 * (hi - lo))
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


@contextmanager
def preserved(job: Any):
    """Everything a trial run changes, put back exactly on exit (also after an error)."""
    model = job.base_model
    tensors = dict(itertools.chain(model.named_parameters(), model.named_buffers()))  # buffers: BN stats
    saved = snapshot({"tensors": tensors, "optimizer": job.optimizer.state_dict(),
                      "schedule": job.schedule.state_dict(), "precision": job.precision.state_dict(),
                      "rng": rng_state()})
    grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}
    training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for name, t in tensors.items():
                t.copy_(saved["tensors"][name])
        for name, p in model.named_parameters():
            p.grad = grads[name]
        job.optimizer.load_state_dict(saved["optimizer"])  # state, LRs, momenta, initial_lr
        job.schedule.load_state_dict(saved["schedule"])
        job.precision.load_state_dict(saved["precision"])
        set_rng_state(saved["rng"])
        model.train(training)


def find(job: Any, run_dir: str | Path, rule: str = "valley", **kw) -> tuple[float, list[float], list[float]]:
    """The range test on job.train with everything restored; writes lr_finder.png in run_dir."""
    if rule not in RULES:
        raise DlrunError(f"lr_finder rule must be one of {', '.join(RULES)}; got {rule!r}")
    with preserved(job):
        lrs, losses = range_test(job.model, job.train, job.loss_fn, job.optimizer, job.precision, **kw)
    value = suggest(lrs, losses, rule, num_it=kw.get("num_it", 100))
    plot(lrs, losses, value, rule, Path(run_dir) / "lr_finder.png")
    return value, lrs, losses


def lr_find(job: Any, run_dir: str | Path, rule: str = "valley", **kw) -> float:
    """`dlrun mode=lr_find`: the suggested LR (the job itself is left exactly as it was)."""
    return find(job, run_dir, rule, **kw)[0]


class LRFinder(Trick):
    name = "lr_finder"
    needs = {"one process": "run `dlrun mode=lr_find` first and pass its optim.lr"}  # ranks do not share the test

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, rule: str = "valley"):
        if not 0 < start_lr < end_lr:
            raise DlrunError(f"lr_finder needs 0 < start_lr < end_lr; got start_lr={start_lr}, end_lr={end_lr}")
        if int(num_it) < 10:
            raise DlrunError(f"lr_finder num_it must be >= 10 (the first 10% and last 5 points are dropped); "
                             f"got {num_it}")
        if rule not in RULES:
            raise DlrunError(f"lr_finder rule must be one of {', '.join(RULES)}; got {rule!r}")
        self.start_lr, self.end_lr, self.num_it, self.rule = float(start_lr), float(end_lr), int(num_it), rule
        self.suggestion: float | None = None
        self.curve: tuple[list[float], list[float]] = ([], [])
        self.job: Any = None

    def bind(self, job: Any) -> None:
        self.job = job

    def before_fit(self, run_dir: Path) -> Parts:
        value, lrs, losses = find(self.job, run_dir, self.rule, start_lr=self.start_lr, end_lr=self.end_lr,
                                  num_it=self.num_it)
        self.suggestion, self.curve = value, (lrs, losses)
        return self._apply(value)

    def _apply(self, value: float) -> Parts:
        """The suggestion as the (largest) group LR and as the run's peak LR (onecycle's max_lr); the
        schedule is rebuilt on it (Tricks.apply). Discriminative LRs (gradual_unfreezing) keep their
        ratios to the largest one."""
        top = max(g["lr"] for g in self.job.optimizer.param_groups)
        for group in self.job.optimizer.param_groups:
            # initial_lr: what a rebuilt scheduler starts from
            group["lr"] = group["initial_lr"] = value * group["lr"] / top
        return Parts(peak_lr=value)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {} if self.suggestion is None else {"lr_finder/suggestion": self.suggestion}

    def state_dict(self) -> dict[str, Any]:
        if self.suggestion is None:
            return {}
        return {"suggestion": self.suggestion, "rule": self.rule, "lrs": list(self.curve[0]),
                "losses": list(self.curve[1])}

    def load_state_dict(self, state: dict[str, Any]) -> Parts | None:
        if not state:
            return None
        self.suggestion, self.curve = float(state["suggestion"]), (list(state["lrs"]), list(state["losses"]))
        # the run's peak again (a schedule rebuilt later peaks there); the resumed optimizer and schedule
        # states, loaded after this, carry the LR and the cycle themselves
        return Parts(peak_lr=self.suggestion)

    def report(self) -> dict:
        return {"suggestion": self.suggestion, "rule": self.rule, "points": len(self.curve[0])}
