"""The watchdog: cheap invariants checked while an ordinary run trains (TrainCheck, OSDI 2025:
invariants checked during training catch silent errors within an iteration; AutoTrainer, ICSE 2021:
exploding/vanishing gradients, dying ReLU, oscillating loss). Each finding is reported once: one
console line and an entry in summary.json `watch`, with its evidence and the guides' remedy.

What it costs, by schedule (every = watch_every):
- every step: no device op. The loss and the batch are kept by reference (the batches up to
  HOLD_BYTES; past that, the held ones are fingerprinted at once); on a busy CPU each small op
  costs tens of microseconds, a real share of a few-millisecond step;
- at steps 1, 2, 4, 8 and every `every` steps, a check: the held batches get one fingerprint per
  sample (one concatenation, two small ops), the kept losses and the gradient norm reach the host
  in one copy; the loss curve (going up, spikes, oscillation, a negative loss), the gradient norm
  (explosion, collapse) and the learning rate against the schedule are judged;
- at steps 1, 2, 4, 8 and every 4 x `every` steps, also the update/weight ratio (a copy of the
  weights before the step) and the BatchNorm statistics;
- at steps 0, every, 2, 4, 8, 16... x every, then every 100 x every steps, the dead/saturated
  units of a fixed probe batch (one observed forward, dlrunner.doctor.activations): often while
  units die fastest (early), a few times per run later;
- at the end of an epoch, the same samples seen twice (one unique over the epoch's fingerprints)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from dlrunner.watch_rules import Rules

RATIO_EVERY = 4  # the update ratio and BatchNorm statistics at every 4th regular check
PROBE_EVERY = 100  # after the geometric start, the unit probe every 100 checks' worth of steps
HOLD_BYTES = 32 * 2**20  # batches held for fingerprinting at the next check, at most (then at once)


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
                 warn: Callable[[str], None], every: int = 20, probe_every: int = PROBE_EVERY,
                 train_x: torch.Tensor | None = None, scaled_grads: bool = False):
        self.model, self.autocast, self.warn = model, autocast, warn
        self.probing, self.probe = probe, None  # the probe: the first batch's first 64 samples, as the net got them
        self.every, self.probe_every = max(1, int(every)), max(1, int(probe_every))
        self.scaled_grads = scaled_grads  # fp16 with a GradScaler: an inf gradient is a skipped step, not a bug
        self.alerts: dict[str, Alert] = {}
        self.losses: list[torch.Tensor] = []  # this window's losses, as the loop returned them (on the device)
        self.held: list[torch.Tensor] = []  # this window's batches, not yet fingerprinted
        self.held_bytes = 0
        self.prints: list[torch.Tensor] = []  # per-sample fingerprints of this epoch's batches
        self.params: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] | None = None
        self.grad_norm: torch.Tensor | None = None
        self.checks, self.step, self.epoch = 0, 0, 0
        self.rules = Rules()
        self._proj: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.bns = [(n, m) for n, m in model.named_modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None]
        self.expected_dups = _duplicates(self._fingerprint(train_x)) if train_x is not None and len(train_x) else None

    # --- called by the loop ------------------------------------------------------------------

    def due(self, step: int) -> bool:
        return step % self.every == 0 or (step < self.every and step & (step - 1) == 0)

    def _ratio_due(self, step: int) -> bool:
        return step < self.every or step % (RATIO_EVERY * self.every) == 0

    def before_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        """Just before the optimizer step (gradients final): the gradient norm when a check is due,
        and a copy of the weights when the update ratio is."""
        if not self.due(step):
            return
        self.params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.grad_norm = _total_norm([p.grad for p in self.params]) if self.params else None  # read at after_step
        if self._ratio_due(step):
            with torch.no_grad():
                self.weights = torch._foreach_mul([p.detach() for p in self.params if p.dim() > 1], 1.0)

    def after_step(self, step: int, epoch: int, loss: torch.Tensor, x: torch.Tensor,
                   optimizer: torch.optim.Optimizer, schedule) -> None:
        """After the optimizer and schedule stepped; `step` is the index of the step just taken."""
        self.losses.append(loss)  # after backward its graph holds no activations: keeping it costs nothing
        self.held.append(x)
        self.held_bytes += x.nbytes
        if self.held_bytes > HOLD_BYTES:
            self._fingerprint_held()
        if not self.due(step):
            return
        self._fingerprint_held()
        if self.probing and self.probe is None:
            self.probe = x[:64].detach().clone()
        self.checks += 1
        self.step, self.epoch = step, epoch
        self._check(step, optimizer, schedule)
        if self.probing and self._probe_due(step):
            try:
                sites = self._observe()
            except Exception as e:  # the probe must never stop training (e.g. a model that wants other inputs)
                self.probing = False
                self.warn(f"watch: the unit probe is off ({type(e).__name__}: {e})")
                return
            for kind, evidence, remedy in self.rules.units(sites):
                self._alert(kind, evidence, remedy)

    def _check(self, step: int, optimizer: torch.optim.Optimizer, schedule) -> None:
        """Every number the check needs reaches the host in one copy (one sync on a GPU)."""
        ratios, bn_ok = (self._update_ratios(), self._bn_finite()) if self.weights is not None else (None, None)
        dev = self.losses[0].device
        norm = self.grad_norm if self.grad_norm is not None else torch.zeros((), device=dev)
        with torch.no_grad():  # the kept losses still carry their (emptied) graphs
            losses = torch.stack(self.losses).reshape(-1)
        parts = [losses, norm.reshape(1)]
        if ratios is not None:
            parts += [ratios, bn_ok]
        values = torch.cat([v.to(dev, torch.float32) for v in parts]).tolist()
        n = len(self.losses)
        self.losses = []
        self.rules.add_losses(values[:n])
        grad_norm = values[n] if self.grad_norm is not None else None
        ratio, bn_bad = None, []
        if ratios is not None:
            r = values[n + 1:n + 1 + len(ratios)]
            ratio = sorted(r)[len(r) // 2] if r else None
            bn_bad = [name for (name, _), good in zip(self.bns, values[n + 1 + len(ratios):]) if not good]
        lrs = [g["lr"] for g in optimizer.param_groups]
        said = schedule.get_last_lr() if getattr(schedule, "optimizer", None) is optimizer \
            and hasattr(schedule, "get_last_lr") else None
        for kind, evidence, remedy in self.rules.check(step, grad_norm, ratio, lrs, said, self.scaled_grads, bn_bad):
            self._alert(kind, evidence, remedy)

    def _probe_due(self, step: int) -> bool:
        """At steps 0, every, 2x, 4x, 8x... every, then every probe_every x every steps (a probe
        costs about one observed forward of 64 samples)."""
        k = step // self.every
        return step % self.every == 0 and (k & (k - 1) == 0 or k % self.probe_every == 0)

    def epoch_end(self, epoch: int, num_samples: int) -> None:
        """The samples of the epoch just finished: the same one twice is a sampler bug."""
        self._fingerprint_held()
        if not self.prints:
            return
        prints = torch.cat(self.prints)
        self.prints = []
        dups = _duplicates(prints)
        expected = self.expected_dups or 0
        if self.expected_dups is not None and dups > expected + max(1, 0.01 * num_samples):
            self.epoch = epoch
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
        before, self.weights = self.weights, None
        now = [p.detach() for p in self.params if p.dim() > 1]
        if not now:
            return torch.zeros(0)
        moved = torch.stack(torch._foreach_norm(torch._foreach_sub(now, before)))
        size = torch.stack(torch._foreach_norm(before))
        keep = (size > 0) & torch.isfinite(size)
        return (moved / size.clamp_min(1e-30))[keep]

    def _bn_finite(self) -> torch.Tensor:
        """One flag per BatchNorm layer: its running statistics are finite (a norm is finite
        exactly when every value is, short of an overflow that is itself a fault)."""
        if not self.bns:
            return torch.zeros(0)
        stats = [t for _, m in self.bns for t in (m.running_mean, m.running_var)]
        norms = torch.stack(torch._foreach_norm(stats)).reshape(-1, 2)
        return torch.isfinite(norms).all(1)

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

    @torch.no_grad()
    def _fingerprint_held(self) -> None:
        """Fingerprint the batches held since the last call: one op chain for a run of equal shapes."""
        held, self.held, self.held_bytes = self.held, [], 0
        i = 0
        while i < len(held):
            j = i + 1
            while j < len(held) and held[j].shape[1:] == held[i].shape[1:] and held[j].dtype == held[i].dtype:
                j += 1
            self.prints.append(self._fingerprint(*held[i:j]))
            i = j

    def _fingerprint(self, *xs: torch.Tensor) -> torch.Tensor:
        """One number per sample from 256 of its values spread over it: equal samples, equal numbers.
        The columns and the projection are made once per sample shape; batches of one shape share
        the projection (one concatenation of the picked columns, not of the batches)."""
        flats = [x.detach().reshape(len(x), -1) for x in xs]
        key = (flats[0].shape[1], flats[0].device)
        if key not in self._proj:
            cols = torch.arange(0, key[0], max(1, key[0] // 256))[:256]
            g = torch.Generator().manual_seed(0)
            self._proj[key] = (cols.to(key[1]), torch.randn(len(cols), generator=g).to(key[1]))
        cols, proj = self._proj[key]
        picked = [f.index_select(1, cols) for f in flats]
        picked = picked[0] if len(picked) == 1 else torch.cat(picked)
        return (picked if picked.dtype == proj.dtype else picked.float()) @ proj


@torch.no_grad()
def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm over all gradients in two ops (get_total_norm's value, less of its Python);
    gradients spread over several devices or dtypes go through get_total_norm itself."""
    try:
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    except RuntimeError:
        return torch.nn.utils.get_total_norm(grads)


def _duplicates(prints: torch.Tensor) -> int:
    return int(len(prints) - len(torch.unique(prints)))


def build(job, warn: Callable[[str], None], every: int) -> Watch:
    """A watchdog for a built job. The unit probe runs the uncompiled model; repeated samples are
    judged against the split's own duplicates (in-memory splits only)."""
    x = getattr(job.data.train, "x", None)
    return Watch(getattr(job.model, "_orig_mod", job.model), True, job.precision.autocast, warn, every,
                 train_x=x if x is not None and len(x) else None,
                 scaled_grads=getattr(job.precision, "scaler", None) is not None)
