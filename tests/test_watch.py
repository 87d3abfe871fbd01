"""The watchdog: each problem is built for real and named within the first epoch, once, in the
console and in summary.json `watch`; a healthy run raises nothing; watch=false turns it off."""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from dlrunner.watch import Watch


def kinds(summary: dict) -> dict[str, dict]:
    return {f["kind"]: f for f in summary["watch"]["findings"]}


def watch_lines(r) -> list[str]:
    return [line for line in (r.stdout + r.stderr).splitlines() if "watch: step" in line]


@pytest.mark.slow
def test_exploding_gradients_named_in_the_first_epoch(dlrun):
    r = dlrun("epochs=1", "optim=sgd", "optim.lr=2", "data.batch_size=16", timeout=600)
    found = kinds(r.summary())
    assert found["grad_explodes"]["epoch"] == 1, found
    assert "exploding gradients" in found["grad_explodes"]["evidence"]
    assert "trick=grad_clip" in found["grad_explodes"]["remedy"]
    lines = watch_lines(r)
    assert len([line for line in lines if "exploding gradients" in line]) == 1  # once, not every check
    assert len(lines) == len(found)


@pytest.mark.slow
def test_loss_going_up_named_in_the_first_epoch(dlrun):
    # gradient ascent: a user's own optimizer with maximize=True (the loss's value is right, its direction wrong)
    r = dlrun("epochs=1", "optim=sgd", "optim._target_=torch.optim.SGD", "+optim.maximize=true", "optim.lr=0.003",
              "optim.momentum=0", "data.batch_size=16", timeout=600)
    found = kinds(r.summary())
    up = found["loss_up"]
    assert up["epoch"] == 1 and "the training loss goes up" in up["evidence"]
    last, first = map(float, re.search(r"median (\S+) over the last 10 steps vs (\S+) over the first 10",
                                        up["evidence"]).groups())
    assert last > 1.3 * first
    assert "lower optim.lr" in up["remedy"]


@pytest.mark.slow
def test_units_dying_during_training_named_in_the_first_epoch(dlrun):
    r = dlrun("epochs=1", "optim=sgd", "optim.lr=0.15", "data.batch_size=16", timeout=600)
    found = kinds(r.summary())
    dead = found["units_dead"]
    assert dead["epoch"] == 1
    share = re.match(r"`features.4`: (\d+)% ReLU units are dead on the probe batch, up from 0% at the start",
                     dead["evidence"])
    assert share and int(share.group(1)) > 70, dead["evidence"]


@pytest.mark.slow
def test_healthy_run_raises_nothing_and_watch_false_turns_it_off(dlrun):
    r = dlrun("epochs=2", timeout=600)
    s = r.summary()
    # 2 x 41 steps, watch_every=20: steps 0, 1, 2, 4, 8, 16, 20, 40, 60, 80
    assert s["watch"]["findings"] == [] and s["watch"]["checks"] == 10 and not watch_lines(r)
    off = dlrun("epochs=1", "watch=false", timeout=600)
    assert off.returncode == 0 and "watch" not in off.summary()


# --- the invariants that need a planted fault in the loop itself -------------------------------

def _watch(model: nn.Module, train_x: torch.Tensor | None = None, every: int = 1) -> tuple[Watch, list[str]]:
    said: list[str] = []
    return Watch(model, False, _no_autocast, said.append,
                 every=every, train_x=train_x), said


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def _steps(w: Watch, model: nn.Module, opt, sched, xs: list[torch.Tensor], epoch: int = 0, start: int = 0,
           before=None) -> None:
    for i, x in enumerate(xs):
        step = start + i
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        w.before_step(step, opt)
        opt.step()
        sched.step()
        if before:
            before(step)
        w.after_step(step, epoch, loss, x, opt, sched)


def test_same_samples_twice_in_an_epoch():
    torch.manual_seed(0)
    data = torch.randn(64, 5)
    model = nn.Linear(5, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    w, said = _watch(model, train_x=data)
    _steps(w, model, opt, sched, list(data.split(16)))  # a proper epoch: each sample once
    w.epoch_end(0, 64)
    assert "repeated_samples" not in w.alerts
    idx = torch.randint(0, 64, (64,), generator=torch.Generator().manual_seed(1))  # drawn with replacement
    _steps(w, model, opt, sched, list(data[idx].split(16)), epoch=1, start=4)
    w.epoch_end(1, 64)
    a = w.alerts["repeated_samples"]
    dups = 64 - len(torch.unique(idx))
    assert f"epoch 2 delivered 64 samples of which {dups} repeat one already seen" in a.evidence
    assert "without replacement" in a.remedy and len(said) == 1


def test_lr_not_what_the_schedule_says_and_batchnorm_nonfinite():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    w, said = _watch(model)
    x = [torch.randn(8, 3) for _ in range(6)]

    def meddle(step):  # user code that sets the LR by hand behind the schedule's back, then a NaN batch statistic
        if step == 3:
            opt.param_groups[0]["lr"] = 0.1
            model[1].running_var[0] = math.nan
    _steps(w, model, opt, sched, x, before=meddle)
    assert f"the optimizer's learning rate is 0.1 where the schedule says {0.1 * 0.5 ** 4:.3g}" in w.alerts["lr_schedule"].evidence
    assert "BatchNorm running statistics are NaN/Inf in 1" in w.alerts["batchnorm_nonfinite"].evidence
    # each said once (the planted LR of 0.1 on so small a net may also move the weights too fast)
    assert len(said) == len(w.alerts) and set(w.alerts) - {"update_ratio_high"} == {"lr_schedule", "batchnorm_nonfinite"}


@pytest.mark.slow
def test_bench_row_times_the_same_job_with_and_without(tmp_path):
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "bench"))
    import run as bench_run
    import watch as watch_bench

    res = watch_bench.cost(tmp_path, ["data.fraction=0.2"], 1, bench_run.compose_cfg)
    # rounds=1: round 0 warms up, round 1 is timed; the watch ran in one epoch of each round
    assert res["rounds"] == 1 and res["findings"] == 0
    every = res["every"]
    due = [s for s in range(4 * res["steps_per_epoch"]) if s % every == 0 or (s < every and s & (s - 1) == 0)]
    on_steps = [s for s in due if s // res["steps_per_epoch"] in (0, 3)]  # ABBA: on, off, off, on
    assert res["checks"] == len(on_steps)
    assert res["ratio"] == pytest.approx(res["watch_s_per_epoch"] / res["no_watch_s_per_epoch"], rel=1e-2)


def test_bad_watch_every_is_one_line(dlrun):
    r = dlrun("watch_every=0")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("dlrun: error: watch must be true/false and watch_every an "
                                                        "integer >= 1")
