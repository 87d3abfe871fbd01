"""The watchdog: cheap invariants checked while an ordinary run trains (TrainCheck, OSDI 2025:
invariants checked during training catch silent errors within an iteration; AutoTrainer, ICSE 2021:
exploding/vanishing gradients, dying ReLU, oscillating loss). Each finding is reported once: one
console line and an entry in summary.json `watch`, with its evidence and the guides' remedy.

Every step costs two tiny device ops (the loss and a fingerprint of the batch are kept, no host
sync); the checks run at steps 1, 2, 4, 8 and then every `every` steps: the loss curve (going up,
spikes, oscillation, a negative loss), the gradient norm (explosion, collapse), the update/weight
ratio, BatchNorm statistics, the learning rate against the schedule; at steps 0, 10, 20, 40, 80,
160 and every 200 (every=10) the dead/saturated units of a fixed probe batch
(dlrunner.doctor.activations). At the end of an epoch, the same samples seen twice."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from dlrunner.watch_rules import Rules


@dataclass
class Alert:
    """One finding: what, where, the measurement, and what to do."""

    kind: str
    step: int
    epoch: int
    evidence: str
    remedy: str


class Watch:
    """Created once per run; train_epoch calls before_step/after_step each step and epoch_end."""

    def __init__(self, model: nn.Module, probe: bool, autocast: Callable,
                 warn: Callable[[str], None], every: int = 10, probe_every: int = 20,
                 train_x: torch.Tensor | None = None, scaled_grads: bool = False):
        self.model, self.autocast, self.warn = model, autocast, warn
        self.probing, self.probe = probe, None  # the probe: the first batch's first 64 samples, as the net got them
        self.every, self.probe_every = max(1, int(every)), max(1, int(probe_every))
        self.scaled_grads = scaled_grads  # fp16 with a GradScaler: an inf gradient is a skipped step, not a bug
        self.alerts: dict[str, Alert] = {}
        self.pending_losses: list[torch.Tensor] = []
        self.prints: list[torch.Tensor] = []  # per-sample fingerprints of this epoch's batches
        self.weights: list[torch.Tensor] | None = None
        self.checks = 0
        self.rules = Rules()
        self._proj: dict[tuple, torch.Tensor] = {}
        self.expected_dups = _duplicates(self._fingerprint(train_x)) if train_x is not None and len(train_x) else None

    # --- called by the loop ------------------------------------------------------------------

    def due(self, step: int) -> bool:
        return step % self.every == 0 or (step < self.every and step & (step - 1) == 0)

    def before_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Just before the optimizer step (gradients final): keep the weights when a check is due."""
        if self.due(step):
            self.params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.weights = [p.detach().clone() for p in self.params]
            grads = [p.grad.detach() for p in self.params]
            self.grad_norm = torch.nn.utils.get_total_norm(grads) if grads else None  # read at after_step

    def after_step(self, step: int, epoch: int, loss: torch.Tensor, x: torch.Tensor,
                   optimizer: torch.optim.Optimizer, schedule) -> None:
        """After the optimizer and schedule stepped; `step` is the index of the step just taken."""
        self.pending_losses.append(loss.detach().float().reshape(()))
        self.prints.append(self._fingerprint(x))
        if self.probing and self.probe is None:
            self.probe = x[:64].detach().clone()
        if self.weights is None:
            return
        self.checks += 1
        self.step, self.epoch = step, epoch
        # every number the check needs in one device -> host copy (one sync on a GPU)
        ratios, bn_ok = self._update_ratios(), self._bn_finite()
        parts = [torch.stack(self.pending_losses).float(), ratios.float(), bn_ok.float(),
                 (self.grad_norm if self.grad_norm is not None else torch.zeros(())).reshape(1).float()]
        values = torch.cat([p.to(parts[0].device) for p in parts]).tolist()
        n, r = len(self.pending_losses), len(ratios)
        losses, ratio_list, ok, norm = values[:n], values[n:n + r], values[n + r:-1], values[-1]
        self.pending_losses.clear()
        self.rules.add_losses(losses)
        grad_norm = norm if self.grad_norm is not None else None
        ratio = statistics.median(ratio_list) if ratio_list else None
        bn_bad = [name for name, good in zip(self.bn_names, ok) if not good]
        lrs = [g["lr"] for g in optimizer.param_groups]
        said = schedule.get_last_lr() if getattr(schedule, "optimizer", None) is optimizer \
            and hasattr(schedule, "get_last_lr") else None
        for kind, evidence, remedy in self.rules.check(step, grad_norm, ratio, lrs, said, self.scaled_grads, bn_bad):
            self._alert(kind, evidence, remedy)
        if self.probing and self._probe_due(step):
            try:
                sites = self._observe()
            except Exception as e:  # the probe must never stop training (e.g. a model that wants other inputs)
                self.probing = False
                self.warn(f"watch: the unit probe is off ({type(e).__name__}: {e})")
                return
            for kind, evidence, remedy in self.rules.units(sites):
                self._alert(kind, evidence, remedy)

    def _probe_due(self, step: int) -> bool:
        """At steps 0, every, 2x, 4x, 8x... every, then every probe_every x every steps: often while
        units die fastest (early), rarely later (a probe costs about one forward)."""
        k = step // self.every
        return step % self.every == 0 and (k & (k - 1) == 0 or k % self.probe_every == 0)

    def epoch_end(self, epoch: int, num_samples: int) -> None:
        """The samples of the epoch just finished: the same one twice is a sampler bug."""
        if not self.prints:
            return
        prints = torch.cat(self.prints)
        self.prints = []
        dups = _duplicates(prints)
        expected = self.expected_dups or 0
        if self.expected_dups is not None and dups > expected + max(1, 0.01 * num_samples):
            self.epoch = epoch
            self.step = getattr(self, "step", 0)
            self._alert("repeated_samples",
                        f"epoch {epoch + 1} delivered {len(prints)} samples of which {dups} repeat one already "
                        f"seen that epoch (the split itself holds {expected} duplicates)",
                        "each epoch should see every sample once: shuffle without replacement (a permutation), "
                        "do not concatenate the data with itself")

    # --- what the loop's numbers say ---------------------------------------------------------

    def report(self) -> dict:
        return {"every": self.every, "checks": self.checks, "findings": [asdict(a) for a in self.alerts.values()]}

    def _alert(self, kind: str, evidence: str, remedy: str) -> None:
        if kind in self.alerts:
            return
        a = Alert(kind, self.step, self.epoch + 1, evidence, remedy)
        self.alerts[kind] = a
        self.warn(f"watch: step {a.step}, epoch {a.epoch}: {evidence}; {remedy}")

    def _update_ratios(self) -> torch.Tensor:
        """|dW| / |W| of each weight matrix for the step just taken (on the device)."""
        pairs = [(p.detach(), w) for p, w in zip(self.params, self.weights) if p.dim() > 1]
        self.weights = None
        if not pairs:
            return torch.zeros(0)
        now, before = [p for p, _ in pairs], [w for _, w in pairs]
        moved = torch.stack(torch._foreach_norm(torch._foreach_sub(now, before)))
        size = torch.stack(torch._foreach_norm(before))
        keep = (size > 0) & torch.isfinite(size)
        return (moved / size.clamp_min(1e-30))[keep]

    def _bn_finite(self) -> torch.Tensor:
        """One flag per BatchNorm layer: its running statistics are finite."""
        bns = [(n, m) for n, m in self.model.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None]
        self.bn_names = [n for n, _ in bns]
        if not bns:
            return torch.zeros(0)
        return torch.stack([torch.isfinite(m.running_mean).all() & torch.isfinite(m.running_var).all() for _, m in bns])

    @torch.no_grad()
    def _observe(self) -> dict:
        from dlrunner.doctor.activations import Observer

        was = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]), Observer(self.model) as obs, self.autocast():
                self.model(self.probe)
        finally:
            self.model.train(was)
        return obs.sites

    def _fingerprint(self, x: torch.Tensor) -> torch.Tensor:
        """One number per sample from 256 of its values spread over it: equal samples, equal numbers."""
        flat = x.detach().reshape(len(x), -1)
        flat = flat[:, ::max(1, flat.shape[1] // 256)][:, :256].float()
        key = (flat.shape[1], flat.device)
        if key not in self._proj:
            g = torch.Generator().manual_seed(0)
            self._proj[key] = torch.randn(flat.shape[1], generator=g).to(flat.device)
        return flat @ self._proj[key]


def _duplicates(prints: torch.Tensor) -> int:
    return int(len(prints) - len(torch.unique(prints)))


def build(job, warn: Callable[[str], None], every: int) -> Watch:
    """A watchdog for a built job. The unit probe runs the uncompiled model; repeated samples are
    judged against the split's own duplicates (in-memory splits only)."""
    x = getattr(job.data.train, "x", None)
    return Watch(getattr(job.model, "_orig_mod", job.model), True, job.precision.autocast, warn, every,
                 train_x=x if x is not None and len(x) else None,
                 scaled_grads=getattr(job.precision, "scaler", None) is not None)
