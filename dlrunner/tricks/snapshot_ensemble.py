"""Snapshot Ensembles (Huang et al., ICLR 2017, "Snapshot Ensembles: Train 1, get M for free"):
the LR follows M equal cosine cycles with warm restarts over the whole run,
lr(t) = lr0/2 * (cos(pi * (t mod T/M) / (T/M)) + 1); at the end of each cycle, where the net has
settled into a minimum, a copy of its weights (BatchNorm statistics included) is kept, and the
prediction is the weighted mean of the kept snapshots' softmax outputs. Suggested (paper):
M = 4-6 cycles of at least a few epochs each, lr0 = 0.1 (SGD) / 0.2 (DenseNet), keep the last
few; weights=linear trusts later snapshots more (snapshot k weighs k), uniform is the paper's mean."""
from __future__ import annotations

import bisect
import copy
import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.optim.lr_scheduler import LambdaLR

from dlrunner.engine import checkpoint
from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick


def check_weights(weights: Any, cycles: int, keep: int) -> list[float] | str:
    if isinstance(weights, str):
        if weights not in ("linear", "uniform"):
            raise DlrunError(f"trick.snapshot_ensemble.weights must be linear, uniform or a list, got {weights!r}")
        return weights
    try:
        ws = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise DlrunError(f"trick.snapshot_ensemble.weights must be linear, uniform or a list of numbers, "
                         f"got {weights!r}") from None
    if len(ws) != cycles or min(ws) < 0 or sum(ws[-keep:]) <= 0:
        raise DlrunError(f"trick.snapshot_ensemble.weights: need one weight >= 0 per cycle ({cycles}) with a "
                         f"positive sum over the kept ones, got {ws}")
    return ws


class SnapshotEnsemble(Trick):
    name = "snapshot_ensemble"
    owns = frozenset({"schedule"})

    def __init__(self, cycles: int = 4, keep: int | None = None, weights: str | list[float] = "linear"):
        if int(cycles) != cycles or int(cycles) < 1:
            raise DlrunError(f"trick.snapshot_ensemble.cycles must be an integer >= 1, got {cycles}")
        self.cycles = int(cycles)
        if keep is not None and not 1 <= int(keep) <= self.cycles:
            raise DlrunError(f"trick.snapshot_ensemble.keep must be in [1, cycles={self.cycles}] or null (all), "
                             f"got {keep}")
        self.keep = self.cycles if keep is None else int(keep)
        self.weights = check_weights(weights, self.cycles, self.keep)
        self.bounds: list[int] = []  # step where each cycle starts, and the total at the end
        self.snapshots: list[dict[str, torch.Tensor]] = []  # the last `keep`, on the CPU
        self.count = 0  # snapshots taken so far (the kept ones are count-len+1 .. count)
        self._on_device: list[dict[str, torch.Tensor]] | None = None

    def schedule(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int):
        if total_steps < self.cycles:
            raise DlrunError(f"trick.snapshot_ensemble: {self.cycles} cycles need at least as many steps; the run "
                             f"has {total_steps}")
        # integer bounds: restarts and snapshots fall on the same steps even when T/M is fractional
        bounds = [c * total_steps // self.cycles for c in range(self.cycles + 1)]
        self.bounds, last = bounds, self.cycles - 1

        def factor(t: int) -> float:  # the LR multiplier of step t (0-based)
            c = min(bisect.bisect_right(bounds, t) - 1, last)
            return 0.5 * (math.cos(math.pi * (t - bounds[c]) / (bounds[c + 1] - bounds[c])) + 1)
        return LambdaLR(optimizer, factor)

    def bind(self, job: Any) -> None:
        self.model = job.base_model
        # a frame to run the snapshots in, never trained and never pruned: the live model is left alone
        self.frame = copy.deepcopy(job.base_model).eval().requires_grad_(False)

    def after_step(self, model: nn.Module, step: int) -> None:
        if step + 1 in self.bounds[1:]:  # the last step of a cycle
            self.snapshots = (self.snapshots + [checkpoint.snapshot(dict(self.model.state_dict()))])[-self.keep:]
            self.count += 1
            self._on_device = None

    def numbers(self) -> list[int]:
        """1-based numbers of the kept snapshots, oldest first."""
        return list(range(self.count - len(self.snapshots) + 1, self.count + 1))

    def snapshot_weights(self) -> torch.Tensor:
        ks = self.numbers()
        if self.weights == "uniform":
            return torch.ones(len(ks))
        if self.weights == "linear":
            return torch.tensor(ks, dtype=torch.float32)
        return torch.tensor([self.weights[k - 1] for k in ks])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """log of sum_k w_k softmax(f_k(x)) / sum_k w_k: (B, K), so cross-entropy on it is the ensemble's NLL."""
        if not self.snapshots:
            return None
        if self._on_device is None:  # once per new snapshot, not per batch
            self._on_device = [{k: v.to(x.device) for k, v in s.items()} for s in self.snapshots]
        logp = torch.stack([torch.log_softmax(functional_call(self.frame, s, (x,)).float(), dim=1)
                            for s in self._on_device])  # (S, B, K)
        w = self.snapshot_weights().to(x.device)
        log_w = torch.log(w / w.sum())[:, None, None]  # (S, 1, 1)
        return torch.logsumexp(logp + log_w, dim=0)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {"snapshot_ensemble/snapshots": self.count}

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": list(self.snapshots), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.snapshots, self.count = [dict(s) for s in state["snapshots"]], int(state["count"])
        self._on_device = None

    def report(self) -> dict:
        w = self.snapshot_weights() if self.snapshots else torch.zeros(0)
        return {"snapshots": self.count, "kept": self.numbers(), "weights": (w / w.sum()).tolist() if len(w) else []}
