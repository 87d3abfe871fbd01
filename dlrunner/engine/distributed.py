"""Data-parallel training over several processes with torch.distributed.

Two ways in, one code path:
- `dlrun trainer.devices=N`: the `dlrun` process becomes rank 0 and starts N-1 copies of itself
  (same overrides) with torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT) pointing at it.
- `torchrun --nproc_per_node=N -m dlrunner ...`: torchrun starts the N processes.

Either way, rank 0 alone lets Hydra pick the run folder and sends its path to the others, which
join that folder without writing into it: rank 0 alone writes logs, metrics, plots and
checkpoints. `data.batch_size` is the global batch: every batch of the single-process epoch
order is split across the ranks (each rank gets a contiguous slice), so N processes take the
same optimizer steps on the same samples as one process would, and every sample is seen once
per epoch. Gradients are averaged by DistributedDataParallel; losses are weighted so that
the average equals the loss of the whole batch even when a batch does not split evenly.
Backend: gloo on the CPU, nccl on CUDA (gloo still carries the small CPU-side messages).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from dlrunner.errors import DlrunError

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# Tricks whose work before training is not yet coordinated across processes.
TIMEOUT = timedelta(minutes=10)  # a rank that died leaves the others waiting at most this long


@dataclass(frozen=True)
class World:
    """Where this process stands: rank r of `size` processes (size 1: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()


def from_env() -> World:
    """torchrun's variables, when this process was started by torchrun or by `trainer.devices`."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return SINGLE
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))))


def current() -> World:
    """The world of the initialized process group (SINGLE when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return SINGLE


def init_group(world: World) -> None:
    """One process group for both kinds of traffic: tensors on CUDA go through nccl, everything on
    the CPU (run folder, stop flags, metrics of CPU runs) through gloo."""
    if dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable values; over gloo on the CPU)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], Any], world: World) -> Any:
    """Run `fn` on rank 0 alone and hand its result to every rank; a DlrunError it raises is
    raised on every rank (so no rank is left waiting for the others)."""
    if not world.active:
        return fn()
    result, error = None, None
    if world.main:
        try:
            result = fn()
        except DlrunError as e:
            error = str(e)
    result, error = broadcast((result, error))
    if error is not None:
        raise DlrunError(error)
    return result


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums over ranks of a few numbers, in float64 (exact for counts below 2**53)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one (a stop request, a non-finite loss)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def pick_device(name: str, world: World) -> str:
    """Each rank drives its own GPU (cuda:LOCAL_RANK); CPU processes share the cores."""
    if not world.active:
        return name
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank % torch.cuda.device_count()}"
    if name == "auto":
        return "cpu"
    return name


class ShardedBatches:
    """One rank's part of a batch iterator: the same batches, in the same order, each cut into
    `world.size` contiguous slices; this rank gets slice `world.rank`. Every rank takes the same
    number of steps (DistributedDataParallel needs that) and each sample is seen by one rank.

    `weight` is this rank's share of the current batch times the world size: the loss of a
    slice times its weight, averaged over ranks (what DDP does to gradients), is the loss of
    the whole batch."""

    def __init__(self, batches, world: World):
        self.inner, self.world = batches, world
        self.weight = 1.0

    def __getattr__(self, name: str) -> Any:  # batch_size, seed, device, x, y... of the wrapped iterator
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples

    def __len__(self) -> int:
        return len(self.inner)

    def iterate(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
        for i, (x, y) in self.inner.iterate(epoch, start):
            n = len(y)
            lo, hi = self.bounds(n)
            self.weight = (hi - lo) * self.world.size / n
            yield i, (x[lo:hi], y[lo:hi])

    def bounds(self, n: int) -> tuple[int, int]:
        """Slice [lo, hi) of a batch of n for this rank: sizes differ by at most one."""
        base, extra = divmod(n, self.world.size)
        r = self.world.rank
        lo = r * base + min(r, extra)
        return lo, lo + base + (1 if r < extra else 0)


class DataParallel:
    """Keeps the DistributedDataParallel wrapper of job.model up to date: a trick may swap the
    model or change which parameters train (gradual unfreezing), and DDP only syncs the
    parameters that required gradients when it was built, so it is rebuilt when either changes.
    Building it copies rank 0's weights and buffers to every rank."""

    def __init__(self, device: torch.device):
        self.device = device
        self._key: tuple | None = None
        self._ddp: nn.Module | None = None

    def __call__(self, model: nn.Module) -> nn.Module:
        key = (id(model), tuple(p.requires_grad for p in model.parameters()))
        if key != self._key:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DDP(model, device_ids=ids)  # buffers follow rank 0's at every forward (the default)
            self._key = key
        return self._ddp


def child_command(task_overrides: list[str]) -> list[str]:
    """The command line of ranks 1..N-1: this job's own overrides (for a multirun, the job's, not
    the sweep's), plus any config-location flags of the original command."""
    flags, argv, i = [], sys.argv[1:], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-cd", "--config-dir", "-cp", "--config-path", "-cn", "--config-name") and i + 1 < len(argv):
            flags += [a, argv[i + 1]]
            i += 1
        elif a.startswith(("--config-dir=", "--config-path=", "--config-name=")):
            flags.append(a)
        i += 1
    return [sys.executable, "-m", "dlrunner", *flags, *task_overrides]


def spawn(devices: int, task_overrides: list[str]) -> list[subprocess.Popen]:
    """Start ranks 1..devices-1 and make this process rank 0 of a fresh world. Their console
    output is dropped (rank 0 reports); their errors still reach stderr."""
    port = str(free_port())
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(devices)}
    os.environ.update({**base, "RANK": "0", "LOCAL_RANK": "0"})
    cmd = child_command(task_overrides)
    procs = []
    for r in range(1, devices):
        env = {**os.environ, **base, "RANK": str(r), "LOCAL_RANK": str(r)}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    return procs


def limit_threads(world: World) -> None:
    """CPU ranks share the cores: without a limit each would start one thread per core."""
    if world.active and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.size))


def join_run_dir() -> None:
    """Ranks 1..N-1, before Hydra starts: join the process group, receive rank 0's run folder and
    make Hydra use it as is (no unique suffix, no .hydra/ or log file of their own)."""
    world = from_env()
    if not world.active or world.main:
        return
    init_group(world)
    run_dir = broadcast(None)
    keep = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "+hydra.run.dir=", "-m", "--multirun"))]
    sys.argv[1:] = [*keep, f"hydra.run.dir={run_dir}", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


@contextmanager
def session(devices: int, run_dir: Path, task_overrides: list[str]) -> Iterator[World]:
    """Around one training job (in a multirun, one per job): start or join the world, tell the
    other ranks the run folder, and on the way out wait for the ranks this process started.
    devices <= 1 and no torchrun environment: a plain single-process run."""
    world = from_env()
    procs: list[subprocess.Popen] = []
    if not world.active and devices > 1:
        procs = spawn(devices, task_overrides)
        world = from_env()
    if not world.active:
        yield SINGLE
        return
    started_here = bool(procs)
    ok = False
    try:
        if world.main:
            init_group(world)
            broadcast(str(run_dir.resolve()))
        limit_threads(world)
        yield world
        ok = True
    finally:
        if dist.is_initialized():
            if ok:
                dist.barrier()
            dist.destroy_process_group()
        if started_here:
            for k in ENV_KEYS:
                os.environ.pop(k, None)  # the next job of a multirun starts its own world
            _reap(procs, ok)


def _reap(procs: list[subprocess.Popen], ok: bool) -> None:
    """Wait for the ranks this process started; when it failed, stop them first."""
    if not ok:
        for p in procs:
            if p.poll() is None:
                p.terminate()
    codes = [p.wait() for p in procs]
    bad = [(r + 1, c) for r, c in enumerate(codes) if c != 0]
    if ok and bad:
        raise DlrunError("; ".join(f"rank {r} exited with code {c}" for r, c in bad))


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank updated its own
    copy with its slice of the last batch, and rank 0's is the one saved."""
    for b in model.buffers():
        dist.broadcast(b, src=0)
