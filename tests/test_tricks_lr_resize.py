"""lr_finder and progressive_resizing do what their cards say."""
from __future__ import annotations

import copy
import csv
import io
import itertools
import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrunner import build
from dlrunner.modes import train as runner
from dlrunner.build import build_job
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.engine.precision import Precision
from dlrunner.tricks.lr_finder import LRFinder, lr_find, preserved, range_test, suggest
from dlrunner.tricks.progressive_resizing import ProgressiveResizing, side_at

CPU = torch.device("cpu")
RESNET = ("model=resnet", "model.width=8", "model.depth=1", "data.size=16")  # BatchNorm, cheap on a CPU


def warm_up(job, n: int = 2) -> None:
    """A few plain steps, so optimizer state and BatchNorm buffers are not at their defaults."""
    for _, (x, y) in itertools.islice(job.train.iterate(0), n):
        job.optimizer.zero_grad()
        job.loss_fn(job.model(x), y).backward()
        job.optimizer.step()
        job.schedule.step()


def assert_same(a, b, path="") -> None:
    """Bit-identical nested states (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, path


def test_before_fit_restores_weights_buffers_optimizer_rng_and_sets_the_lr(make_cfg, tmp_path):
    job = build_job(make_cfg("debug=smoke", *RESNET, "trick=lr_finder", "trick.lr_finder.num_it=30"), CPU, print)
    warm_up(job)
    tensors = copy.deepcopy(dict(itertools.chain(job.model.named_parameters(), job.model.named_buffers())))
    assert any("running_var" in n for n in tensors) and not torch.all(tensors["1.body.2.running_var"] == 1)
    grads = [p.grad.clone() for p in job.model.parameters()]
    opt = copy.deepcopy(job.optimizer.state_dict())
    rng, py_rng = torch.get_rng_state(), random.getstate()
    (finder,) = job.tricks
    job.tricks.apply(finder.before_fit(tmp_path))  # a hook returns what it replaces
    value = finder.suggestion
    now = dict(itertools.chain(job.model.named_parameters(), job.model.named_buffers()))
    assert_same({k: t.detach() for k, t in tensors.items()}, {k: t.detach() for k, t in now.items()})
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, job.model.parameters()))
    after = job.optimizer.state_dict()
    assert_same(opt["state"], after["state"])  # Adam moments and step counts
    for old, new in zip(opt["param_groups"], after["param_groups"]):
        assert new["lr"] == new["initial_lr"] == value != old["lr"]  # the one deliberate change
        assert_same({k: v for k, v in old.items() if "lr" not in k}, {k: v for k, v in new.items() if "lr" not in k})
    assert torch.equal(torch.get_rng_state(), rng) and random.getstate() == py_rng
    assert job.schedule.base_lrs == [value]  # the schedule was rebuilt on the suggestion
    job.optimizer.step()
    job.schedule.step()
    assert job.optimizer.param_groups[0]["lr"] == value  # constant schedule: stays there
    assert finder.on_epoch_end(0) == {"lr_finder/suggestion": value}
    buf = io.BytesIO()
    torch.save(finder.state_dict(), buf)  # checkpoints load with weights_only=True
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert state["suggestion"] == value and len(state["lrs"]) == len(state["losses"]) >= 10


def test_lr_find_on_digits_suggests_below_divergence_and_leaves_the_job_alone(make_cfg, tmp_path):
    job = build_job(make_cfg("debug=smoke"), CPU, print)
    warm_up(job)
    opt, sched = copy.deepcopy(job.optimizer.state_dict()), copy.deepcopy(job.schedule.state_dict())
    weights = copy.deepcopy(job.model.state_dict())
    value = lr_find(job, tmp_path)
    assert_same(opt, job.optimizer.state_dict())  # LR included: lr_find only reports
    assert_same(sched, job.schedule.state_dict())
    assert_same(weights, job.model.state_dict())
    lrs, losses = range_test(job.model, job.train, job.loss_fn, job.optimizer, job.precision)
    assert suggest(lrs, losses) == value  # the restored job replays the very same curve
    # AdamW turns the loss back up (dead units, or a blow-up that stops the test) well before lr=10
    assert losses[-1] > 1.2 * min(losses) and lrs[losses.index(min(losses))] < 1.0
    assert lrs[0] <= value < lrs[-1] / 10  # inside the range, well below the blow-up
    assert 1e-5 < value < 1e-1
    png = (tmp_path / "lr_finder.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_preserved_restores_the_grad_scaler_and_rng(make_cfg):
    job = build_job(make_cfg("debug=smoke", "precision=16-mixed"), CPU, print)
    scaler = job.precision.scaler
    scaler.scale(torch.ones(()))  # materialize the scale tensor
    before = copy.deepcopy(job.precision.state_dict())
    rng = torch.get_rng_state()
    with preserved(job):
        scaler.update(new_scale=8.0)  # what an overflow in the test would do (x0.5 each time)
        torch.rand(100)
    assert job.precision.state_dict() == before and before["scale"] == 2.0**16
    assert float(scaler.get_scale()) == 2.0**16
    assert torch.equal(torch.get_rng_state(), rng)


def test_onecycle_peaks_at_the_suggestion_and_resume_keeps_it(make_cfg, tmp_path):
    cfg = make_cfg("debug=smoke", "trick=[lr_finder,onecycle]", "trick.lr_finder.num_it=30", "epochs=8")
    job = build_job(cfg, CPU, print)
    finder, cycle = job.tricks
    job.tricks.apply(finder.before_fit(tmp_path))  # a hook returns what it replaces
    value = finder.suggestion
    assert cycle.max_lr == value and job.optimizer.param_groups[0]["max_lr"] == value
    seen = []
    for _ in range(job.epochs * job.steps_per_epoch):
        seen.append(job.optimizer.param_groups[0]["lr"])
        job.optimizer.step()
        job.schedule.step()
    assert max(seen) == pytest.approx(value, rel=1e-3) and seen[0] == pytest.approx(value / 25)
    fresh = build_job(cfg, CPU, print)
    fresh.tricks.load_state_dict(job.tricks.state_dict())
    assert fresh.tricks.items[1].max_lr == value and fresh.tricks.on_epoch_end(0) == {"lr_finder/suggestion": value}


def test_a_run_trains_at_the_suggestion_and_records_it(make_cfg, tmp_path):
    cfg = make_cfg("debug=smoke", "trick=lr_finder", "trick.lr_finder.num_it=30", "checkpoint_interval=0")
    runner.train(cfg, tmp_path, {}, Reporter(live=False))
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    value = float(rows[0]["lr_finder/suggestion"])
    assert value != 3e-4 and all(float(r["lr"]) == value == float(r["lr_finder/suggestion"]) for r in rows)
    assert (tmp_path / "lr_finder.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["tricks"]["lr_finder"]["suggestion"] == value  # a resumed run reports it too


class Scripted(nn.Module):
    """One weight, so the optimizer has something to step."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * x


def scripted_test(seq, **kw):
    """The range test on 3 batches (cycled) with the loss of step i = seq[i]."""
    batches = SimpleNamespace(iterate=lambda epoch: enumerate((torch.ones(()), None) for _ in range(3)))
    feed = iter(seq)
    model = Scripted()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    return range_test(model, batches, lambda out, y: out * 0 + next(feed), opt, Precision(None, CPU), **kw)


def test_range_test_smooths_with_the_debiased_ema_and_grows_the_lr_exponentially():
    lrs, losses = scripted_test([1.0, 2.0, 3.0, 2.0], start_lr=1e-3, end_lr=1e-1, num_it=3, beta=0.5)
    assert losses == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])  # avg/(1-beta**n), avg from 0
    assert lrs == pytest.approx([1e-3, 1e-2, 1e-1])  # cycles through the 3 batches, stops at num_it


def test_range_test_stops_when_the_loss_explodes():
    seq = [1.0] * 10 + [1e4] * 50
    lrs, losses = scripted_test(seq, num_it=60, beta=0.5)
    assert len(lrs) == 11 and losses[-1] > 4 * min(losses)  # the first step above 4x best ends it
    lrs, _ = scripted_test([1.0] * 5 + [math.nan] * 5, num_it=10)
    assert len(lrs) == 5  # a non-finite loss ends it too, and is not recorded


def test_suggest_rules_on_synthetic_curves():
    lrs = torch.logspace(-7, 1, 100).tolist()
    flat, down, up = [2.0] * 40, [2.0 - 0.04 * (i + 1) for i in range(40)], [0.5 + 0.1 * i for i in range(20)]
    losses = flat + down + up  # plateau, valley over indices 40..79, blow-up
    assert suggest(lrs, losses, "valley") == lrs[59]  # halfway into the valley (59.5)
    assert suggest(lrs, losses, "min_div10") == pytest.approx(lrs[79] / 10)
    steep = flat + [2.0 - 0.01 * i for i in range(20)] + [0.8] * 40
    assert suggest(lrs, steep, "steepest") == lrs[60]  # the biggest drop: 59 -> 60
    noisy = [v + 0.02 * ((i * 7919) % 5 - 2) / 2 for i, v in enumerate(losses)]  # +-0.02 wiggle
    assert lrs[45] <= suggest(lrs, noisy) <= lrs[75]
    with pytest.raises(DlrunError, match="diverged after 7 steps"):
        suggest(lrs[:7], losses[:7])


def test_bad_settings_are_refused_before_any_work():
    for kw, msg in (({"rule": "minimum"}, "valley, steepest, min_div10"), ({"start_lr": 10.0}, "start_lr < end_lr"),
                    ({"num_it": 5}, "num_it must be >= 10")):
        with pytest.raises(DlrunError, match=msg):
            LRFinder(**kw)
    for kw, msg in (({"initial_scale": 0}, "initial_scale"), ({"finish_frac": 1.5}, "finish_frac"),
                    ({"multiple": 2.5}, "multiple")):
        with pytest.raises(DlrunError, match=msg):
            ProgressiveResizing(**kw)


def test_resize_schedule_starts_at_half_grows_linearly_and_ends_full():
    sizes = [side_at(s, 100, 28) for s in range(100)]
    assert sizes[0] == 16  # 0.5 * 28 = 14, to the nearest multiple of 4
    assert sizes == sorted(sizes) and all(s % 4 == 0 for s in sizes)
    assert all(abs(sizes[s] - 28 * (0.5 + 0.5 * s / 80)) <= 2 for s in range(80))  # linear, within rounding
    assert set(sizes[80:]) == {28} and len(set(sizes)) == 4  # 16, 20, 24, 28
    assert side_at(0, 100, 12, initial_scale=0.25) == 8 and side_at(10, 100, 30) % 4 == 0  # floor 8 px
    assert side_at(99, 100, 30) == 30 and side_at(0, 100, 6) == 6  # never above full size


def test_on_batch_resizes_images_with_antialiasing_and_keeps_labels(make_cfg):
    job = build_job(make_cfg("debug=smoke", "model=resnet", "model.width=4", "model.depth=1",
                             "trick=progressive_resizing"), CPU, print)
    (trick,) = job.tricks
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    x2, y2 = trick.on_batch((x, y), 0)
    assert x2.shape == (4, 1, 16, 16) and y2 is y
    assert torch.equal(x2, F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True))
    assert trick.on_batch((x, y), job.epochs * job.steps_per_epoch - 1)[0] is x  # full size: untouched
    assert trick.state_dict() == {}  # the global step is all it needs on resume


def test_images_only_and_models_that_cannot_shrink_are_refused(make_cfg):
    with pytest.raises(DlrunError, match="data tabular.* is tabular"):
        build_job(make_cfg("debug=smoke", "data=tabular", "model=mlp", "trick=progressive_resizing"), CPU, print)
    with pytest.raises(DlrunError, match="LeNet built for 28x28 cannot take 16x16 inputs"):
        build_job(make_cfg("debug=smoke", "trick=progressive_resizing"), CPU, print)


def test_run_trains_on_growing_images_and_evaluates_at_full_size(make_cfg, tmp_path, monkeypatch):
    seen: list[tuple[bool, int]] = []  # (training?, image side) of every forward
    plain = build.build_model

    def recorded(*a, **kw):
        model = plain(*a, **kw)
        model.register_forward_pre_hook(lambda m, inp: seen.append((m.training, inp[0].shape[-1])))
        return model
    monkeypatch.setattr(build, "build_model", recorded)
    cfg = make_cfg("debug=smoke", "model=resnet", "model.width=4", "model.depth=1", "trick=progressive_resizing",
                   "epochs=4", "checkpoint_interval=0",
                   "watch=false")  # the watchdog probes units with eval forwards of the batch as trained
    runner.train(cfg, tmp_path, {}, Reporter(live=False))
    assert seen[0] == (False, 16)  # bind's dry forward at the smallest size, in eval mode
    seen = seen[1:]
    train = [side for training, side in seen if training]
    total = len(train)
    assert train == [side_at(s, total, 28) for s in range(total)]  # the model got exactly the scheduled size
    assert train[0] == 16 and set(train[int(0.8 * total) + 1:]) == {28}
    assert {side for training, side in seen if not training} == {28}  # evaluation at full size
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    sizes = [float(r["resize/size"]) for r in rows]
    assert sizes == sorted(sizes) and sizes[0] < 28 and sizes[-1] == 28
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["tricks"] == {"progressive_resizing": {}}


def test_range_test_stops_when_the_loss_blows_up(make_cfg):
    job = build_job(make_cfg("debug=smoke", "optim=sgd"), CPU, print)
    lrs, losses = range_test(job.model, job.train, job.loss_fn, job.optimizer, job.precision)
    assert len(lrs) < 100  # stopped early
    assert not math.isfinite(losses[-1]) or losses[-1] > 4 * min(losses)
