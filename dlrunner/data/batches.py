"""Epoch iterators with a seeded order per epoch, resumable at any batch."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dlrunner.data.core import Split

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_chunks(n: int, batch_size: int, shuffle: bool, seed: int, epoch: int) -> list[torch.Tensor]:
    """Index batches for one epoch: the order depends only on (seed, epoch), so a resumed run
    sees the same batches. A last batch of one sample joins the previous one (BatchNorm needs 2)."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    else:
        order = torch.arange(n)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


class TensorBatches:
    """Batches cut from tensors held on the device: no workers, no host copies per step."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, seed: int, device: torch.device,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.x, self.y = split.x.to(device), split.y.to(device)
        self.batch_size, self.shuffle, self.seed, self.augment = batch_size, shuffle, seed, augment
        self.device = device

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def __len__(self) -> int:
        return len(epoch_chunks(self.num_samples, self.batch_size, False, 0, 0))

    def iterate(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, Batch]]:
        chunks = epoch_chunks(self.num_samples, self.batch_size, self.shuffle, self.seed, epoch)
        for i in range(start, len(chunks)):
            idx = chunks[i].to(self.device)
            x = self.x[idx]
            yield i, (self.augment(x) if self.augment else x, self.y[idx])


class _ChunkSampler(Sampler):
    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch, self.start = 0, 0

    def __iter__(self):
        chunks = epoch_chunks(self.n, self.batch_size, self.shuffle, self.seed, self.epoch)
        return iter([c.tolist() for c in chunks[self.start:]])

    def __len__(self) -> int:
        return len(epoch_chunks(self.n, self.batch_size, False, 0, 0)) - self.start


class LoaderBatches:
    """Batches streamed from a Dataset through DataLoader workers (pinned, persistent)."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, device: torch.device,
                 num_workers: int = 0, augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.sampler = _ChunkSampler(len(dataset), batch_size, shuffle, seed)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
        self.device, self.augment, self.batch_size = device, augment, batch_size

    @property
    def num_samples(self) -> int:
        return self.sampler.n

    def __len__(self) -> int:
        return len(epoch_chunks(self.sampler.n, self.batch_size, False, 0, 0))

    def iterate(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, Batch]]:
        self.sampler.epoch, self.sampler.start = epoch, start
        for i, (x, y) in enumerate(self.loader, start):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield i, (self.augment(x) if self.augment else x, y)


def make_batches(split, batch_size: int, *, shuffle: bool, seed: int, device: torch.device,
                 num_workers: int = 0, augment=None):
    """TensorBatches for in-memory splits, LoaderBatches for streamed ones."""
    if isinstance(split, Split):
        return TensorBatches(split, batch_size, shuffle=shuffle, seed=seed, device=device, augment=augment)
    return LoaderBatches(split, batch_size, shuffle=shuffle, seed=seed, device=device,
                         num_workers=num_workers, augment=augment)
