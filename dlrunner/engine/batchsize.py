"""`data.batch_size=auto`: the largest power-of-two batch whose training step fits in memory, with
a margin (Lightning's BatchSizeFinder in "power" mode does the doubling; the margin is ours).

Each probe is one forward and backward pass on real training samples, without an optimizer
step; the model's weights, buffers (BatchNorm statistics), gradients and the RNG streams are put
back afterwards, so the run starts exactly as with a fixed batch size. On a GPU a size only
counts as fitting when its peak memory stays under MARGIN of the device's memory: the optimizer
state (allocated at the first real step) and fragmentation are not in the probe. On a CPU there
is no memory limit to find: the search stops at the cap."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from dlrunner.data.core import DataBundle
from dlrunner.engine.checkpoint import snapshot
from dlrunner.engine.oom import free_memory
from dlrunner.engine.precision import Precision

MARGIN = 0.85  # share of the GPU's memory a probe may peak at
MAX_BATCH = 4096
MIN_STEPS = 16  # the cap leaves at least this many steps per epoch


def cap(n_train: int) -> int:
    """The largest power of two <= min(MAX_BATCH, n_train / MIN_STEPS), at least 2."""
    limit = max(2, min(MAX_BATCH, n_train // MIN_STEPS))
    return 1 << (limit.bit_length() - 1)


def probe(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, precision: Precision) -> None:
    """One training forward + backward at this batch size (raises torch.OutOfMemoryError)."""
    model.train()
    with precision.autocast():
        out = model(x)
        loss = loss_fn(out.float(), y)
    loss.backward()


def fits(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor, precision: Precision,
         device: torch.device) -> bool:
    failed = False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        probe(model, loss_fn, x, y, precision)
    except torch.OutOfMemoryError:
        failed = True  # the traceback's tensors are released once the except block ends
    for p in model.parameters():
        p.grad = None
    free_memory(device)
    if failed:
        return False
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return torch.cuda.max_memory_allocated(device) <= MARGIN * total
    return True


def find_batch_size(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
                    precision: Precision, device: torch.device) -> tuple[int, list[dict]]:
    """(batch size, trials) for training samples x, y (on any device; moved per probe).
    Doubles from 2 up to cap(len(y)); the answer is the last size that fit (at least 1)."""
    saved = snapshot(model.state_dict())
    was_training = model.training
    trials: list[dict] = []
    best, size = 1, 2
    limit = cap(len(y))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        while size <= limit:
            idx = torch.arange(size) % len(y)
            ok = fits(model, loss_fn, x[idx].to(device), y[idx].to(device), precision, device)
            trials.append({"batch_size": size, "fits": ok})
            if not ok:
                break
            best, size = size, size * 2
    model.load_state_dict(saved)
    model.train(was_training)
    return best, trials


def auto_batch_size(model: nn.Module, loss_fn: Callable, data: DataBundle, precision: Precision,
                    device: torch.device, note: Callable[[str], None]) -> int:
    """data.batch_size=auto (dlrunner.engine.batchsize). In a data-parallel run each process probes its
    own share; the ranks agree on the smallest, and the global batch is that times their number."""
    from dlrunner.engine import distributed

    train = data.train
    if hasattr(train, "x"):
        x, y = train.x, train.y
    else:  # a streamed Dataset: enough samples for the largest probe
        k = min(len(train), cap(len(train)))
        items = [train[i] for i in range(k)]
        x, y = torch.stack([torch.as_tensor(a) for a, _ in items]), torch.as_tensor([int(b) for _, b in items])
    size, trials = find_batch_size(model, loss_fn, x, y, precision, device)
    world = distributed.current()
    if world.active:
        t = torch.tensor([size], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        size = int(t.item()) * world.size
    data.extra["batch_size_auto"] = {"batch_size": size, "trials": trials}
    tried = ", ".join(f"{t['batch_size']}{'' if t['fits'] else ' (too big)'}" for t in trials)
    note(f"data.batch_size=auto: {size} (tried {tried})")
    return size
