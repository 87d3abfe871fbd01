"""Out-of-memory recovery in the training step, on the CPU: a model that raises
torch.OutOfMemoryError above a given batch size stands in for a GPU that is full."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dlrunner.build import build_job
from dlrunner.errors import DlrunError
from dlrunner.loop import Meter, TrainState, train_epoch
from dlrunner.oom import OOMGuard, pieces

CPU = torch.device("cpu")

# written next to the run as `limited.py` for the end-to-end tests (a user's `_target_` module)
LIMITED_SOURCE = '''
import torch
from torch import nn
from dlrunner.models.lenet import build_lenet


class Limited(nn.Module):
    """LeNet that runs out of memory on batches larger than `limit`."""

    def __init__(self, in_shape, num_classes, limit: int = 8):
        super().__init__()
        self.net, self.limit = build_lenet(in_shape=in_shape, num_classes=num_classes), limit

    def forward(self, x):
        if self.training and len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated: batch {len(x)} > {self.limit})")
        return self.net(x)
'''


class Limited(nn.Module):
    """Wraps a model; raises torch.OutOfMemoryError (in the forward or in the backward pass) for
    training batches larger than `limit`, and counts the sizes it ran."""

    def __init__(self, inner: nn.Module, limit: int, where: str = "forward"):
        super().__init__()
        self.inner, self.limit, self.where, self.sizes = inner, limit, where, []

    def forward(self, x):
        too_big = self.training and len(x) > self.limit
        if too_big and self.where == "forward":
            raise torch.OutOfMemoryError("simulated")
        out = self.inner(x)
        if too_big:  # fails after the parameters' gradients were written: a partial backward
            out = _FailInBackward.apply(out)
        else:
            self.sizes.append(len(x))
        return out


class _FailInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        raise torch.OutOfMemoryError("simulated")


def test_guard_halves_until_it_fits_and_says_so_once():
    notes, ran = [], []

    def step(micro):
        if micro > 5:
            raise torch.OutOfMemoryError("simulated")
        ran.append(micro)
        return micro

    guard = OOMGuard(CPU, notes.append)
    assert guard.run(step, 32) == 4  # 32 -> 16 -> 8 -> 4
    assert guard.run(step, 32) == 4  # kept: the next batch starts at 4
    assert guard.run(step, 3) == 3  # a smaller (last) batch fits whole
    assert len(notes) == 1 and "batch size 32" in notes[0] and "micro-batches of 4" in notes[0]
    assert guard.report() == {"batch_size": 32, "micro_batch": 4, "halvings": 3, "accumulation": 8}
    assert pieces(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_guard_gives_up_at_one_sample_with_remedies():
    def step(micro):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(DlrunError, match=r"out of memory with a micro-batch of 1 sample; try .*precision=bf16-mixed"):
        OOMGuard(CPU, lambda m: None).run(step, 4)
    assert OOMGuard(CPU).report() is None


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_recovered_epoch_equals_the_full_batch_epoch(make_cfg, where):
    """Same effective batch: the weights and epoch metrics after an epoch in micro-batches of 8
    equal the plain run's with whole batches of 32 (up to float summation order)."""
    cfg = make_cfg("data.fraction=0.3", "data.batch_size=32", "device=cpu", "seed=1")
    plain, limited = build_job(cfg, CPU, print), build_job(cfg, CPU, print)
    limited.model = Limited(limited.model, limit=8, where=where)
    results = []
    for job, guard in ((plain, None), (limited, OOMGuard(CPU, lambda m: None))):
        meter, state = Meter(CPU), TrainState()
        train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision, job.tricks,
                    state, meter, lambda: False, lambda *a: None, oom=guard)
        results.append((meter.result("train"), state.step, copy.deepcopy(job.base_model.state_dict())))
    (m0, steps0, w0), (m1, steps1, w1) = results
    assert steps1 == steps0 == len(plain.train)  # one optimizer step per batch, as before
    assert m1["train/loss"] == pytest.approx(m0["train/loss"], rel=1e-5)
    assert m1["train/acc"] == pytest.approx(m0["train/acc"])
    for k, v in w0.items():
        assert torch.allclose(w1[f"inner.{k}"], v, atol=1e-6, rtol=1e-5), k
    assert max(limited.model.sizes) == 8  # it really trained in pieces


@pytest.mark.slow
def test_cli_reports_the_recovery_in_console_and_summary(dlrun):
    (dlrun.cwd / "limited.py").write_text(LIMITED_SOURCE)
    r = dlrun("model._target_=limited.Limited", "+model.limit=8", "data.fraction=0.2", "epochs=2", "device=cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("out of memory at batch size 32") == 1
    assert r.summary()["oom"] == {"batch_size": 32, "micro_batch": 8, "halvings": 2, "accumulation": 4}
    assert r.summary()["status"] == "completed"
    bad = dlrun("model._target_=limited.Limited", "+model.limit=0", "data.fraction=0.2", "epochs=1", "device=cpu")
    assert bad.returncode == 2
    assert "dlrun: error: out of memory with a micro-batch of 1 sample; try a smaller model" in bad.stderr
    assert bad.summary()["status"] == "failed"
