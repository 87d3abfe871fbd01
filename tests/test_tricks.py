"""Tricks do what their cards say, and conflicting ones are refused."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dlrunner.engine import schedules
from dlrunner.build import build_job
from dlrunner.errors import DlrunError
from dlrunner.tricks.amp import Amp
from dlrunner.tricks.base import Trick, Tricks
from dlrunner.tricks.onecycle import OneCycle

CPU = torch.device("cpu")


def lr_and_beta1(sched, opt, steps):
    out = []
    for _ in range(steps):
        out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        opt.step()
        sched.step()
    return out


def test_onecycle_shape_and_momentum_cycle():
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=1e-3)
    trace = lr_and_beta1(OneCycle(max_lr=1e-2).schedule(opt, 100, 10), opt, 100)
    lrs, b1 = [t[0] for t in trace], [t[1] for t in trace]
    peak = max(range(100), key=lambda i: lrs[i])
    assert lrs[0] == pytest.approx(1e-2 / 25) and max(lrs) == pytest.approx(1e-2, rel=1e-2)
    assert 20 <= peak <= 30  # pct_start 0.25
    assert lrs[-1] < 1e-2 / 25 / 50  # far below the start by the last step
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 25 / 1e4)  # and at the end exactly
    assert b1[0] == pytest.approx(0.95) and min(b1) == pytest.approx(0.85, abs=1e-3) and b1[-1] > 0.94


def test_onecycle_defaults_to_the_optimizers_lr():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    sched = OneCycle().schedule(opt, 40, 10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.1, rel=1e-2)


def test_cosine_and_step_schedules_end_where_they_say():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    s = schedules.cosine(opt, 50, 10, eta_min=0.1)
    for _ in range(50):
        opt.step()
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    s = schedules.step(opt, 50, 10, step_epochs=2, gamma=0.5)
    for _ in range(45):
        opt.step()
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 ** 2)


class Owner(Trick):
    name = "other"
    owns = frozenset({"schedule"})


def test_two_owners_of_one_resource_are_refused():
    with pytest.raises(DlrunError, match="trick=other conflicts with trick=onecycle: both set the schedule"):
        Tricks([OneCycle(), Owner()])
    with pytest.raises(DlrunError, match="conflicts with schedule=cosine"):
        Tricks([OneCycle()], {"schedule": "schedule=cosine"})
    with pytest.raises(DlrunError, match="both set the precision"):
        Tricks([Amp()], {"precision": "precision=bf16-mixed"})


def test_amp_rejects_a_bad_dtype_and_resolves_auto():
    with pytest.raises(DlrunError, match="auto, bf16 or fp16"):
        Amp(dtype="fp8")
    assert Amp().precision(CPU).dtype == "bf16"


def test_trick_hooks_run_in_order_and_state_round_trips(make_cfg):
    calls = []

    class Recorder(Trick):
        def __init__(self, name):
            self.name, self.n = name, 0

        def on_batch(self, batch, step):
            calls.append(self.name)
            self.n += 1
            return batch

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, s):
            self.n = s["n"]
    ts = Tricks([Recorder("a"), Recorder("b")])
    ts.on_batch((torch.tensor(1.0), None), 0)
    assert calls == ["a", "b"]
    fresh = Tricks([Recorder("a"), Recorder("b")])
    fresh.load_state_dict(ts.state_dict())
    assert [t.n for t in fresh] == [1, 1]


def test_precision_flag_equals_amp_trick(make_cfg):
    a = build_job(make_cfg("debug=smoke", "precision=bf16-mixed"), CPU, print)
    b = build_job(make_cfg("debug=smoke", "trick=amp", "trick.amp.dtype=bf16"), CPU, print)
    assert a.precision.name == b.precision.name == "bf16-mixed"
    with pytest.raises(DlrunError, match="both set the precision"):
        build_job(make_cfg("debug=smoke", "trick=amp", "precision=16-mixed"), CPU, print)
