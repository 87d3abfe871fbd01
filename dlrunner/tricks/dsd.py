"""Dense-Sparse-Dense training (Han et al., ICLR 2017, "DSD: Dense-Sparse-Dense Training for Deep
Neural Networks"). Three phases by epoch: dense for the first `dense_frac`; sparse: each conv and
linear layer loses the `sparsity` share of its smallest-|w| weights (torch.nn.utils.prune,
l1_unstructured per layer, applied in every forward) and trains on under the mask with a fresh
optimizer state; dense again for the last `redense_frac`: the mask is lifted, the pruned weights
restart at zero, the optimizer state is reset and the LR scaled by `redense_lr_mult`. The sparse
phase acts as a regularizer that moves the net out of its saddle; the final dense phase regains
capacity. Suggested (paper): sparsity 0.3 (0.25-0.5), three equal phases, redense_lr_mult 0.1."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick
from dlrunner.tricks.prune import (AVERAGING_CONFLICT, Layers, apply_masks, enforce, make_permanent, masks_of, plain_checkpoints,
                                   prunable, zero_fraction)

LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # what torch's schedulers compute the LR from


def scale_lr(optimizer: torch.optim.Optimizer, schedule: Any, mult: float) -> None:
    """Scale the LR for the rest of the run under any schedule: the base LRs of closed-form ones
    (LambdaLR, cosine restarts), the current LR that chainable ones (StepLR) multiply, 1cycle's
    peak and floor."""
    for g in optimizer.param_groups:
        for k in LR_KEYS:
            if k in g:
                g[k] *= mult
    if hasattr(schedule, "base_lrs"):
        schedule.base_lrs = [b * mult for b in schedule.base_lrs]
    if isinstance(getattr(schedule, "eta_min", None), float):
        schedule.eta_min *= mult


class DSD(Trick):
    name = "dsd"
    conflicts = {"prune": "trick=dsd conflicts with trick=prune: both prune the weights; keep one", **AVERAGING_CONFLICT}

    def __init__(self, sparsity: float = 0.3, dense_frac: float = 1 / 3, redense_frac: float = 1 / 3,
                 redense_lr_mult: float = 0.1):
        if not 0.0 < float(sparsity) < 1.0:
            raise DlrunError(f"trick.dsd.sparsity must be in (0, 1), got {sparsity}")
        if not (0.0 <= float(dense_frac) and 0.0 <= float(redense_frac) and dense_frac + redense_frac < 1.0):
            raise DlrunError(f"trick.dsd needs dense_frac, redense_frac >= 0 with a sum < 1 (room for the "
                             f"sparse phase), got {dense_frac} and {redense_frac}")
        if not float(redense_lr_mult) > 0.0:
            raise DlrunError(f"trick.dsd.redense_lr_mult must be > 0, got {redense_lr_mult}")
        self.sparsity, self.dense_frac, self.redense_frac = float(sparsity), float(dense_frac), float(redense_frac)
        self.redense_lr_mult = float(redense_lr_mult)
        self.phase = 0  # 0 dense, 1 sparse, 2 dense again
        self.masks: dict[str, torch.Tensor] = {}  # layer name -> bool, True = kept in the sparse phase
        self.layers: Layers = []
        self.starts = (0, 0)  # first sparse epoch, first redense epoch (set in bind)

    def bind(self, job: Any) -> None:
        self.job, self.layers = job, prunable(job.base_model)
        if not self.layers:
            raise DlrunError("trick=dsd: the model has no Conv or Linear layer to prune")
        e = job.epochs
        self.starts = (round(e * self.dense_frac), e - round(e * self.redense_frac))
        if self.starts[0] >= self.starts[1]:
            raise DlrunError(f"trick=dsd: epochs={e} leave no sparse phase (dense_frac={self.dense_frac:.3g}, "
                             f"redense_frac={self.redense_frac:.3g}); raise epochs (3 or more)")
        plain_checkpoints(self.layers)

    def on_epoch_start(self, epoch: int) -> None:
        target = sum(epoch >= s for s in self.starts)
        if target >= 1 and self.phase < 1:
            self._sparsify()
        if target >= 2 and self.phase < 2:
            self._redense()

    def _sparsify(self) -> None:
        for _, m in self.layers:
            # per layer, as in the paper; contiguous scores: L1 pruning's .view(-1) fails on channels_last
            prune.l1_unstructured(m, "weight", amount=self.sparsity, importance_scores=m.weight.detach().contiguous())
        self.masks = masks_of(self.layers)
        enforce(self.layers)
        self._reset_optimizer(1.0)
        self.phase = 1

    def _redense(self) -> None:
        make_permanent(self.layers)  # the pruned weights are exact zeros (enforce), free to grow back
        self._reset_optimizer(self.redense_lr_mult)
        self.phase = 2

    def _reset_optimizer(self, lr_mult: float) -> None:
        """Forget the moments and momentum buffers, exactly as a fresh optimizer would start, but keep
        the object: its groups (per-group LRs, the schedule's bookkeeping) and the schedule driving it
        may come from other tricks (gradual_unfreezing, switch_optim, swa), which a rebuild from the
        configured builders would undo; the LR simply continues on its curve."""
        self.job.optimizer.state.clear()
        if lr_mult != 1.0:
            scale_lr(self.job.optimizer, self.job.schedule, lr_mult)

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.phase == 1:
            enforce(self.layers)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {"dsd/phase": self.phase, "dsd/sparsity": zero_fraction(self.layers)}

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The checkpoint's weights are plain (zeros where masked); the sparse phase gets its masks back.
        The optimizer and schedule were only reset and rescaled in place: the resume's loading of their
        saved states restores that."""
        self.phase, self.masks = int(state["phase"]), dict(state["masks"])
        apply_masks(self.layers, self.masks if self.phase == 1 else {})

    def report(self) -> dict:
        return {"sparse_from_epoch": self.starts[0], "dense_from_epoch": self.starts[1], "sparsity": self.sparsity,
                "redense_lr_mult": self.redense_lr_mult, "final_zero_share": zero_fraction(self.layers)}
