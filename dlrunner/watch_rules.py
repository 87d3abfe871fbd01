"""The watchdog's invariants as plain numbers in, findings out (dlrunner.watch feeds them).
Thresholds follow REFERENCE section 2 where it has one (update/weight ratio outside [1e-5, 1e-1],
> 70% dead ReLU units, > 50% saturated tanh/sigmoid); the others are stated where they are used.
Each finding is (kind, evidence, remedy); the remedies are the guides'."""
from __future__ import annotations

import math
from collections import deque

WINDOW = 10  # steps per loss window (the first window is the reference)
SPIKE = 4.0  # a batch loss above this many times the recent median, and well above the noise
GROWS = 1.3  # a loss window median this many times the first window's: the loss goes up
EXPLODES = 100.0  # a gradient norm this many times the median of the earlier checks
COLLAPSES = 1e-4  # a gradient norm below this share of the first one while the loss has not fallen
RATIO_HIGH, RATIO_LOW = 1e-1, 1e-6  # median update/weight ratio; below it only while the LR is at its peak
SWING_OF_FIRST = 0.1  # oscillation swings must also be this share of the first window's loss
GROWTH = 0.2  # dead or saturated share that must be gained since the first probe (units *dying*)


def _median(values) -> float:
    """The median (statistics.median's value, without its cost: checks run while training)."""
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _mean(values) -> float:
    v = list(values)
    return sum(v) / len(v)


class Rules:
    """State across checks: the loss curve, gradient norms, ratios, the first probe's readings."""

    def __init__(self):
        self.first: list[float] = []  # the first WINDOW losses: the reference
        self.losses: deque[float] = deque(maxlen=8 * WINDOW)  # the recent ones: a check's cost stays flat
        self.norms: list[float] = []
        self.high_ratio = 0
        self.peak_lr = 0.0
        self.first_units: dict[str, float] | None = None

    def check(self, step: int, grad_norm: float | None, ratio: float | None, lrs: list[float],
              said: list[float] | None, scaled_grads: bool, bn_bad: list[str]) -> list[tuple[str, str, str]]:
        out = self._loss()
        out += self._gradients(grad_norm, scaled_grads)
        out += self._ratio(ratio, max(lrs) if lrs else 0.0)
        if said is not None and len(said) == len(lrs):
            off = [(a, b) for a, b in zip(lrs, said) if abs(a - b) > 1e-6 * max(abs(b), 1e-12)]
            if off:
                out.append(("lr_schedule", f"the optimizer's learning rate is {off[0][0]:.3g} where the schedule "
                            f"says {off[0][1]:.3g}: something else sets it",
                            "let the schedule alone set the LR (schedule=...); remove manual `group['lr'] =` code"))
        if bn_bad:
            out.append(("batchnorm_nonfinite", f"BatchNorm running statistics are NaN/Inf in {', '.join(bn_bad[:3])}",
                        "a batch of constant or non-finite inputs, or a diverging step: check the data, lower "
                        "optim.lr, raise data.batch_size"))
        return out

    def add_losses(self, losses: list[float]) -> None:
        finite = [v for v in losses if math.isfinite(v)]
        self.first.extend(finite[:WINDOW - len(self.first)])
        self.losses.extend(finite)
        self.seen = getattr(self, "seen", 0) + len(finite)

    def _loss(self) -> list[tuple[str, str, str]]:
        L = list(self.losses)
        out = []
        if len(self.first) < WINDOW:
            return out
        first = _median(self.first)
        now = _median(L[-WINDOW:])
        if min(L[-WINDOW:]) < 0 <= first or (first < 0 and now < first):
            out.append(("negative_loss", f"the loss is negative and falling (first {WINDOW} steps median "
                        f"{first:.3g}, last {WINDOW} {now:.3g}): a loss to minimize has a floor",
                        "check the loss's sign, and that NLL gets log-probabilities (F.log_softmax)"))
            return out
        if self.seen >= 2 * WINDOW and first > 0 and now > GROWS * first:
            out.append(("loss_up", f"the training loss goes up: median {now:.3g} over the last {WINDOW} steps vs "
                        f"{first:.3g} over the first {WINDOW}",
                        "lower optim.lr (the guides' first cause), check the loss's sign and the labels"))
        recent = L[-4 * WINDOW:-1]
        if len(recent) >= WINDOW and first > 0:
            med = _median(recent)
            if L[-1] > SPIKE * med and L[-1] - med > 0.5 * first:
                out.append(("loss_spike", f"a loss spike: {L[-1]:.3g} against a recent median of {med:.3g}",
                            "lower optim.lr or add trick=grad_clip; look for corrupt samples in that batch"))
        out += self._oscillation(L)
        return out

    def _oscillation(self, L: list[float]) -> list[tuple[str, str, str]]:
        """Window medians that go up and down in turn with large swings and no net progress. The
        swings are judged against the loss level and against the first window's loss: a converged
        loss wobbling around 0.01 after starting at 2.3 swings widely relative to itself, but by
        nothing that matters relative to where training started."""
        meds = [_median(L[i:i + WINDOW]) for i in range(0, len(L) - WINDOW + 1, WINDOW)][-7:]
        if len(meds) < 7 or not self.first:
            return []
        d = [b - a for a, b in zip(meds, meds[1:])]
        flips = sum((a > 0) != (b > 0) for a, b in zip(d, d[1:]))
        step = _mean(abs(v) for v in d)
        swing = step / max(_mean(abs(m) for m in meds), 1e-12)
        first = abs(_median(self.first))
        if flips >= len(d) - 1 and swing > 0.3 and step > SWING_OF_FIRST * first and meds[-1] > 0.9 * meds[0]:
            return [("loss_oscillates", f"the loss oscillates: {WINDOW}-step medians "
                     + " ".join(f"{m:.3g}" for m in meds) + f" (no net progress; the first {WINDOW} steps' "
                     f"median was {first:.3g})", "lower optim.lr; check for corrupted or shuffled labels")]
        return []

    def _gradients(self, norm: float | None, scaled: bool) -> list[tuple[str, str, str]]:
        if norm is None:
            return []
        if not math.isfinite(norm):
            return [] if scaled else [("grad_explodes", f"the gradient norm is {norm}",
                                       "lower optim.lr, add trick=grad_clip, normalize the inputs")]
        out = []
        if len(self.norms) >= 3:
            med = _median(self.norms)
            if med > 0 and norm > EXPLODES * med:
                out.append(("grad_explodes", f"the gradient norm is {norm:.3g}, {norm / med:.0f}x its median "
                            f"{med:.3g} over the earlier checks: exploding gradients",
                            "lower optim.lr, add trick=grad_clip, add normalization (BatchNorm/LayerNorm)"))
            first = self.norms[0]
            recent = _median(list(self.losses)[-WINDOW:]) if self.losses else 0.0
            start = _median(self.first) if self.first else 0.0
            if first > 0 and norm < COLLAPSES * first and recent > 0.5 * start:
                out.append(("grad_collapses", f"the gradient norm fell to {norm:.3g} ({norm / first:.1e} of its "
                            f"first value) while the loss is still {recent:.3g}: vanishing gradients",
                            "ReLU-family activations, He init, residual connections or BatchNorm; check for dead units"))
        self.norms.append(norm)
        return out

    def _ratio(self, ratio: float | None, lr: float) -> list[tuple[str, str, str]]:
        self.peak_lr = max(self.peak_lr, lr)
        if ratio is None or not math.isfinite(ratio):
            return []
        self.high_ratio = self.high_ratio + 1 if ratio > RATIO_HIGH else 0
        if self.high_ratio >= 2:  # twice in a row: one large first step of Adam is not a trend
            return [("update_ratio_high", f"update/weight ratio {ratio:.2g} (healthy ~1e-3, above {RATIO_HIGH:g} "
                     f"at two checks in a row) at lr {lr:.3g}", "lower optim.lr (`dlrun mode=lr_find` suggests one)")]
        if ratio < RATIO_LOW and lr >= 0.5 * self.peak_lr > 0:
            return [("update_ratio_low", f"update/weight ratio {ratio:.2g} (healthy ~1e-3, below {RATIO_LOW:g}) at "
                     f"lr {lr:.3g}: the weights barely move", "raise optim.lr (`dlrun mode=lr_find` suggests one)")]
        return []

    def units(self, sites: dict) -> list[tuple[str, str, str]]:
        """Dead ReLU / saturated tanh-sigmoid shares on the probe batch, against the first probe."""
        now = {n: (s.dead if s.kind == "relu" else s.saturated / max(s.total, 1)) for n, s in sites.items()}
        if self.first_units is None:
            self.first_units = now
            return []
        out = []
        for name, v in now.items():
            s, was = sites[name], self.first_units.get(name, 0.0)
            limit = 0.7 if s.kind == "relu" else 0.5
            if v > limit and v - was >= GROWTH:
                what = "ReLU units are dead" if s.kind == "relu" else "pre-activations saturate (|x| >= 5)"
                remedy = ("lower optim.lr, use LeakyReLU/GELU (model.act=leaky_relu), check init and normalization"
                          if s.kind == "relu" else "normalize inputs, lower optim.lr, use a smaller init or ReLU")
                out.append((f"units_{'dead' if s.kind == 'relu' else 'saturated'}",
                            f"`{name}`: {100 * v:.0f}% {what} on the probe batch, up from {100 * was:.0f}% "
                            "at the start of training", remedy))
        return out
