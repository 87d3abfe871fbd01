"""Out-of-memory recovery in the training step, on the CPU: a model that raises
torch.OutOfMemoryError above a given batch size stands in for a GPU that is full."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dlrunner.build import build_job
from dlrunner.errors import DlrunError
from dlrunner.engine.loop import Meter, TrainState, train_epoch
from dlrunner.engine.oom import OOMGuard, pieces

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
    cfg = make_cfg("data.fraction=0.1", "data.batch_size=32", "device=cpu", "seed=1")
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
    r = dlrun("model._target_=limited.Limited", "+model.limit=8", "data.fraction=0.1", "epochs=1", "device=cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("out of memory at batch size 32") == 1
    assert r.summary()["oom"] == {"batch_size": 32, "micro_batch": 8, "halvings": 2, "accumulation": 4}
    assert r.summary()["status"] == "completed"
    bad = dlrun("model._target_=limited.Limited", "+model.limit=0", "data.fraction=0.1", "epochs=1", "device=cpu")
    assert bad.returncode == 2
    assert "dlrun: error: out of memory with a micro-batch of 1 sample; try a smaller model" in bad.stderr
    assert bad.summary()["status"] == "failed"


# ---- data.batch_size=auto ----

class LimitedLeNet(nn.Module):
    """The default LeNet, out of memory on training batches larger than `limit` (a `_target_`)."""

    def __init__(self, in_shape, num_classes, limit: int = 20):
        super().__init__()
        from dlrunner.models.lenet import build_lenet

        self.net, self.limit = build_lenet(in_shape=in_shape, num_classes=num_classes), limit

    def forward(self, x):
        if self.training and len(x) > self.limit:
            raise torch.OutOfMemoryError("simulated")
        return self.net(x)


def test_cap_leaves_enough_steps_per_epoch():
    from dlrunner.engine.batchsize import cap

    assert [cap(n) for n in (10, 1300, 50_000, 10**7)] == [2, 64, 2048, 4096]


def test_auto_batch_size_is_the_largest_power_of_two_that_fits_and_leaves_no_trace(make_cfg):
    over = ("model._target_=tests.test_oom.LimitedLeNet", "+model.limit=20", "device=cpu", "seed=2")
    job = build_job(make_cfg(*over, "data.batch_size=auto"), CPU, print)
    assert job.data.batch_size == job.train.batch_size == 16  # 32 > 20 raised; cap(1.3k) = 64 not reached
    trials = job.data.extra["batch_size_auto"]["trials"]
    assert trials == [{"batch_size": b, "fits": b <= 16} for b in (2, 4, 8, 16, 32)]
    # the probes changed nothing: same weights, same RNG stream, no gradients as a fixed batch of 16
    after_auto = torch.rand(3)
    fixed = build_job(make_cfg(*over, "data.batch_size=16"), CPU, print)
    assert torch.equal(torch.rand(3), after_auto)
    for (k, a), b in zip(job.base_model.state_dict().items(), fixed.base_model.state_dict().values()):
        assert torch.equal(a, b), k
    assert all(p.grad is None for p in job.model.parameters())


def test_auto_batch_size_in_the_summary(make_cfg, tmp_path):
    import json

    from dlrunner.modes import train as runner
    from dlrunner.reporting.console import Reporter

    cfg = make_cfg("model._target_=tests.test_oom.LimitedLeNet", "+model.limit=5", "device=cpu",
                   "data.batch_size=auto", "data.fraction=0.1", "epochs=1")
    run = tmp_path / "run"
    run.mkdir()
    runner.train(cfg, run, {}, Reporter(live=False))
    s = json.loads((run / "summary.json").read_text())
    assert s["batch_size"]["value"] == 4 and s["batch_size"]["auto"] is True  # 8 > 5 raised
    assert [t["batch_size"] for t in s["batch_size"]["trials"]] == [2, 4, 8]  # cap(~130 samples) = 8
    assert "oom" not in s  # found before training: no step ran out of memory
