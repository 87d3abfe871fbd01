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
        order = torch.cat(chunks).to(self.device)  # one copy of the epoch's order, not one per step
        ends = torch.tensor([len(c) for c in chunks]).cumsum(0).tolist()
        for i in range(start, len(chunks)):
            idx = order[ends[i] - len(chunks[i]):ends[i]]
            x = self.x[idx]
            yield i, (self.augment(x) if self.augment else x, self.y[idx])


class HostBatches(TensorBatches):
    """In-memory tensors left in host memory (too large for the device, or `data.on_device=false`):
    each batch is gathered on the host, pinned, and copied to the device without blocking."""

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, seed: int, device: torch.device,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.x, self.y = split.x, split.y
        self.batch_size, self.shuffle, self.seed, self.augment = batch_size, shuffle, seed, augment
        self.device, self.pin = device, device.type == "cuda"

    def iterate(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, Batch]]:
        chunks = epoch_chunks(self.num_samples, self.batch_size, self.shuffle, self.seed, epoch)
        for i in range(start, len(chunks)):
            x, y = self.x[chunks[i]], self.y[chunks[i]]
            if self.pin:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield i, (self.augment(x) if self.augment else x, y)


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
                 num_workers: int = 0, augment=None, on_device: bool | None = None):
    """The batch iterator for a split. `on_device` (resolved by `place`): in-memory splits live on
    the device (TensorBatches) or stay on the host (HostBatches); streamed ones go through
    DataLoader workers (LoaderBatches), or are read once into device tensors when True."""
    if on_device is None:
        on_device = isinstance(split, Split)
    if not isinstance(split, Split) and on_device:
        split = materialize(split, num_workers)
    kind = TensorBatches if on_device else HostBatches
    if isinstance(split, Split):
        return kind(split, batch_size, shuffle=shuffle, seed=seed, device=device, augment=augment)
    return LoaderBatches(split, batch_size, shuffle=shuffle, seed=seed, device=device,
                         num_workers=num_workers, augment=augment)


def materialize(dataset: Dataset, num_workers: int = 0) -> Split:
    """A streamed data set read once, in order, into tensors."""
    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=256, num_workers=num_workers):
        xs.append(x), ys.append(torch.as_tensor(y))
    return Split(torch.cat(xs), torch.cat(ys).long())


def split_bytes(split) -> int | None:
    """Bytes of an in-memory split; None for a streamed one (its size is unknown until read)."""
    if isinstance(split, Split):
        return split.x.nelement() * split.x.element_size() + split.y.nelement() * split.y.element_size()
    return None


def place(setting, splits: list, device: torch.device, share: float = 0.25) -> tuple[bool, str]:
    """Resolve `data.on_device` (auto | true | false) to a bool and a one-line reason.
    auto: in-memory data on the device when all splits together take at most `share` of its memory
    (on a CPU the host is the device: always); streamed data (image folders) stays streamed."""
    if setting is True or setting is False:
        return setting, f"data.on_device={str(setting).lower()}"
    sizes = [split_bytes(s) for s in splits]
    if any(b is None for b in sizes):
        return False, "streamed from files (data.on_device=true reads them into memory once)"
    total = sum(sizes)
    if device.type != "cuda":
        return True, "in memory"
    free, capacity = torch.cuda.mem_get_info(device)
    if total <= share * capacity and total <= 0.5 * free:
        return True, f"{total / 2**20:.0f} MiB on the device"
    return False, (f"{total / 2**20:.0f} MiB is over {share:.0%} of the device's {capacity / 2**30:.0f} GiB: "
                   "kept on the host, pinned")
