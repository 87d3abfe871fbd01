"""Precomputed activations for transfer learning (fastai v0.7's `precompute=True`; the guides:
"run a dry epoch computing the outputs up to N layers once, re-use them for all epochs"):
freeze the first layers, push every split through them once (eval mode, no grad, no
augmentation), then train the remaining layers on the cached activations. The cache lives in
memory, or as memmapped .npy files under `dir` for large sets, and is keyed by a hash of the
frozen weights, the input tensors and their shape, so new weights, data or sizes never reuse a
stale cache (v0.7 keyed only on name+size). Needs a model whose forward runs its children in
sequence (lenet, resnet, mlp; torchvision resnets flatten before `fc`)."""
from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrunner.data.batches import TensorBatches
from dlrunner.data.core import Split
from dlrunner.errors import DlrunError
from dlrunner.reporting.files import atomic_write
from dlrunner.tricks.base import Trick
from dlrunner.tricks.context import Parts


class Chain(nn.Module):
    """Children run in order; a Linear after a feature map gets it flattened (torchvision resnets)."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.parts:
            x = m(x.flatten(1) if isinstance(m, nn.Linear) and x.dim() > 2 else x)
        return x


class Frozen(nn.Module):
    """The frozen layers run on every step (cache=false): eval mode, no autograd graph."""

    def __init__(self, part: nn.Module):
        super().__init__()
        self.part = part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.part.eval()
        with torch.no_grad():
            return self.part(x)


def cache_key(frozen: nn.Module, splits: dict[str, Split]) -> str:
    h = hashlib.sha256()
    for k, v in frozen.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for name, s in splits.items():
        h.update(f"{name}{tuple(s.x.shape)}".encode())
        h.update(s.x.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def activations(frozen: nn.Module, x: torch.Tensor, device: torch.device, batch: int = 512) -> torch.Tensor:
    frozen.eval()
    return torch.cat([frozen(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


class Precompute(Trick):
    name = "precompute"
    needs = {"in-memory data": "trick=precompute needs an in-memory data set; data={data} is streamed"}
    # these work on the full model, its weights or its raw inputs, which the cache takes away (half
    # converts the inputs at the model's entry, which the cached layers are called without)
    conflicts = {other: "trick=precompute trains on cached activations; trick={other} needs the full model "
                        "and its raw inputs: keep one"
                 for other in ("ema", "swa", "tta", "snapshot_ensemble", "progressive_resizing", "gradual_unfreezing",
                               "half")}

    def __init__(self, frozen: int | None = None, cache: bool = True, storage: str = "auto",
                 dir: str = "data/precompute", max_memory_mb: float = 2048):
        if storage not in ("auto", "memory", "disk"):
            raise DlrunError(f"trick.precompute.storage must be auto, memory or disk; got {storage!r}")
        self.frozen_n, self.cache, self.storage = frozen, bool(cache), storage
        self.dir, self.max_mb = Path(dir), float(max_memory_mb)
        self.key, self.seconds, self.reused = "", 0.0, False

    def bind(self, job: Any) -> Parts:
        children = list(job.base_model.children())
        n = len(children) - 1 if self.frozen_n is None else int(self.frozen_n)
        if not 0 < n < len(children):
            raise DlrunError(f"trick.precompute.frozen must be in 1..{len(children) - 1} (top-level layers), got {n}")
        full, head, tail = job.base_model, Chain(children[:n]), Chain(children[n:])
        probe = job.data.val.x[:4].to(job.device)
        full.eval()
        with torch.no_grad():
            try:
                chain = torch.allclose(full(probe), tail(head(probe)), atol=1e-5)
            except (RuntimeError, TypeError, ValueError):  # the children do not even compose
                chain = False
        if not chain:
            raise DlrunError(f"trick=precompute: {type(full).__name__}'s forward is not its layers in sequence")
        for p in head.parameters():
            p.requires_grad_(False)
        if not self.cache:  # the same frozen layers, computed on every step: the baseline for speed
            return Parts(full_model=full, model=Chain([Frozen(head), *tail.parts]))
        if job.data.augment:
            warnings.warn("trick=precompute: augmentation is off while training on cached activations")
        splits = {"train": job.data.train, "val": job.data.val, "test": job.data.test}
        self.key = cache_key(head, splits)
        t0 = time.perf_counter()
        cached = {k: self._cached(k, head, s, job.device) for k, s in splits.items()}
        self.seconds = time.perf_counter() - t0  # the one pass through the frozen layers (or the load)
        bs = job.data.batch_size
        val, test = (TensorBatches(cached[k], max(bs, 256), shuffle=False, seed=0, device=job.device)
                     for k in ("val", "test"))
        return Parts(full_model=full, model=tail, val=val, test=test,
                     train=TensorBatches(cached["train"], bs, shuffle=True, seed=job.train.seed, device=job.device))

    def _cached(self, split: str, head: nn.Module, s: Split, device: torch.device) -> Split:
        path = self.dir / self.key / f"{split}.npy"
        if path.is_file():  # same weights, same inputs: the same activations
            self.reused = True
            return Split(torch.from_numpy(np.load(path, mmap_mode="c")), s.y)
        acts = activations(head, s.x, device)
        disk = self.storage == "disk" or (self.storage == "auto" and acts.numel() * 4 / 2**20 > self.max_mb)
        if not disk:
            return Split(acts, s.y)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: np.save(f, acts.numpy()), binary=True)
        return Split(torch.from_numpy(np.load(path, mmap_mode="c")), s.y)

    def report(self) -> dict:
        return {"cache": self.cache, "key": self.key, "seconds_to_cache": round(self.seconds, 3),
                "reused": self.reused, "storage": self.storage}
