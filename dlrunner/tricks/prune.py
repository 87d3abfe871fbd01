"""Magnitude pruning (Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
Networks"): once, at `at_epoch`, zero the smallest-|w| share `sparsity` of the conv and linear
weights (torch.nn.utils.prune: one threshold over all layers with scope=global, or the same share
per layer with scope=layer), then fine-tune with the mask applied in every forward; the surviving
weights keep their trained values (no lottery-ticket rewind). At the end the mask is made
permanent. Suggested: sparsity 0.5-0.8, scope global (layers keep what they need), at_epoch half
way so the fine-tuning recovers the accuracy.

Checkpoints always hold plain `weight` tensors (zeros where pruned) and the masks travel in the
trick's state, so a checkpoint loads into the bare architecture and a resumed run re-applies the
same masks. The helpers here are shared with trick=dsd."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick

Layers = list[tuple[str, nn.Module]]


def prunable(model: nn.Module) -> Layers:
    """Conv and linear layers by name (their weights only: no biases, no norms). Skips the output
    projection of nn.MultiheadAttention: its parent reads the weight without calling its forward,
    so a mask there would never be applied."""
    skip = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and id(m) not in skip]


# EMA and SWA pair the live parameters with their averaged copy by position, and the pruning
# reparametrization reorders them (weight_orig after the bias, weight_mask among the buffers)
AVERAGING_CONFLICT = {"weight averaging": "trick={me} conflicts with trick={other}: its average pairs parameters by "
                                          "position, which pruning reorders; keep one"}


def _save_plain(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: a pruned layer is saved as weight = weight_orig * weight_mask."""
    if prefix + "weight_mask" in state:
        with torch.no_grad():
            state[prefix + "weight"] = state.pop(prefix + "weight_orig") * state.pop(prefix + "weight_mask")


def _load_either(module: nn.Module, state: dict, prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook: accept a plain weight in a pruned layer (it keeps its mask) and the
    weight_orig/weight_mask pair in a plain one (folded into weight)."""
    key = prefix + "weight"
    if hasattr(module, "weight_mask") and key in state and prefix + "weight_orig" not in state:
        state[prefix + "weight_orig"] = state.pop(key)
        state[prefix + "weight_mask"] = module.weight_mask
    elif not hasattr(module, "weight_mask") and prefix + "weight_mask" in state:
        state[key] = state.pop(prefix + "weight_orig") * state.pop(prefix + "weight_mask")


def plain_checkpoints(layers: Layers) -> None:
    """Make the layers' state_dict look unpruned whatever the phase (see _save_plain)."""
    for _, m in layers:
        m.register_state_dict_post_hook(_save_plain)
        m.register_load_state_dict_pre_hook(_load_either)


@torch.no_grad()
def enforce(layers: Layers) -> None:
    """Zero the masked entries of the parameters themselves (the forward hook masks only a product,
    so momentum or weight decay would move them), and point .weight at them for code that reads
    the attribute without a forward (fused eval paths); the next forward replaces it."""
    for _, m in layers:
        if hasattr(m, "weight_mask"):
            m.weight_orig.mul_(m.weight_mask)
            m.weight = m.weight_orig.detach()


def masks_of(layers: Layers) -> dict[str, torch.Tensor]:
    """The current masks, True = kept, on the CPU (small and checkpoint-safe)."""
    return {n: m.weight_mask.detach().to("cpu", torch.bool) for n, m in layers if hasattr(m, "weight_mask")}


def apply_masks(layers: Layers, masks: dict[str, torch.Tensor]) -> None:
    """Give the layers exactly these masks (none: plain layers), whatever their layout was: saved
    masks are re-applied as they are, never recomputed from weights that have moved since."""
    for n, m in layers:
        if n in masks and hasattr(m, "weight_mask"):
            m.weight_mask.copy_(masks[n])
        elif n in masks:
            prune.custom_from_mask(m, "weight", masks[n].to(m.weight.device))
        elif hasattr(m, "weight_mask"):
            m.weight_mask.fill_(1)  # unpruned: keep weight_orig as loaded
            prune.remove(m, "weight")
    enforce(layers)


def make_permanent(layers: Layers) -> None:
    """Drop the reparametrization: weight = weight_orig * mask, a plain parameter again."""
    for _, m in layers:
        if hasattr(m, "weight_mask"):
            prune.remove(m, "weight")


def zero_count(layers: Layers) -> tuple[int, int]:
    """(zero weights, all weights) over the layers, as the forward sees them."""
    with torch.no_grad():
        ws = [m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight for _, m in layers]
        return sum(int((w == 0).sum()) for w in ws), sum(w.numel() for w in ws)


def zero_fraction(layers: Layers) -> float:
    zeros, total = zero_count(layers)
    return zeros / max(total, 1)


class Prune(Trick):
    name = "prune"
    conflicts = AVERAGING_CONFLICT

    def __init__(self, sparsity: float = 0.5, scope: str = "global", at_epoch: int | None = None):
        if not 0.0 < float(sparsity) < 1.0:
            raise DlrunError(f"trick.prune.sparsity must be in (0, 1), got {sparsity}")
        if scope not in ("global", "layer"):
            raise DlrunError(f"trick.prune.scope must be global or layer, got {scope!r}")
        if at_epoch is not None and int(at_epoch) < 0:
            raise DlrunError(f"trick.prune.at_epoch must be >= 0 (or null = half the epochs), got {at_epoch}")
        self.sparsity, self.scope = float(sparsity), scope
        self.at_epoch = None if at_epoch is None else int(at_epoch)
        self.layers: Layers = []
        self.masks: dict[str, torch.Tensor] = {}  # empty until the pruning epoch

    def bind(self, job: Any) -> None:
        self.layers = prunable(job.base_model)
        if not self.layers:
            raise DlrunError("trick=prune: the model has no Conv or Linear layer to prune")
        self.at = job.epochs // 2 if self.at_epoch is None else self.at_epoch
        if self.at >= job.epochs:
            raise DlrunError(f"trick.prune.at_epoch={self.at} is past the last epoch ({job.epochs - 1}); "
                             "lower it or raise epochs")
        plain_checkpoints(self.layers)

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.at and not self.masks:  # not again when resumed inside that epoch
            self.prune_now()

    def prune_now(self) -> None:
        # importance scores made contiguous: torch's L1 pruning calls .view(-1), which fails on
        # channels_last weights
        if self.scope == "global":  # one |w| threshold for all layers
            nhwc = [m for _, m in self.layers if m.weight.dim() == 4 and not m.weight.is_contiguous()]
            for m in nhwc:  # torch flattens the default masks with .view(-1): NCHW while pruning
                m.weight.data = m.weight.data.contiguous()
            prune.global_unstructured([(m, "weight") for _, m in self.layers], prune.L1Unstructured,
                                      amount=self.sparsity,
                                      importance_scores={(m, "weight"): m.weight.detach().contiguous()
                                                         for _, m in self.layers})
            for m in nhwc:  # the same Parameter (the optimizer holds it), back in channels_last
                m.weight_orig.data = m.weight_orig.data.contiguous(memory_format=torch.channels_last)
        else:
            for _, m in self.layers:
                prune.l1_unstructured(m, "weight", amount=self.sparsity,
                                      importance_scores=m.weight.detach().contiguous())
        self.masks = masks_of(self.layers)
        enforce(self.layers)

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.masks:
            enforce(self.layers)

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return {"prune/sparsity": zero_fraction(self.layers)}

    def on_train_end(self) -> None:
        make_permanent(self.layers)

    def report(self) -> dict[str, float]:
        zeros, total = zero_count(self.layers)
        return {"prune/sparsity": zeros / max(total, 1), "prune/zero_weights": float(zeros),
                "prune/weights": float(total)}

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = dict(state.get("masks", {}))
        apply_masks(self.layers, self.masks)
