"""Tricks that hook into the step, the batch or evaluation: each test checks the promised effect."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrunner.modes import train as runner
from dlrunner.build import build_job
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.engine.loop import Meter, TrainState, train_epoch
from dlrunner.tricks.ema import EMA
from dlrunner.tricks.label_smoothing import smooth

CPU = torch.device("cpu")
QUIET = Reporter(live=False)


def one_epoch(job, epoch=0):
    st = TrainState(epoch=epoch)
    train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision, job.tricks, st,
                Meter(CPU), lambda: False, lambda *a: None)


def rows(run) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_grad_clip_bounds_the_norm_and_sees_unscaled_fp16_gradients(make_cfg):
    job = build_job(make_cfg("debug=smoke", "trick=grad_clip", "trick.grad_clip.max_norm=0.01"), CPU, print)
    x, y = next(job.train.iterate(0))[1]
    F.cross_entropy(job.model(x), y).backward()
    job.tricks.after_backward(job.model, 0)
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in job.model.parameters()))
    assert norm <= 0.01 * 1.001
    # fp16: a norm of ~1 is far below 1000 once unscaled but far above it while scaled by 2**16
    job = build_job(make_cfg("debug=smoke", "trick=[amp,grad_clip]", "trick.amp.dtype=fp16",
                             "trick.grad_clip.max_norm=1000"), CPU, print)
    one_epoch(job)
    assert job.tricks.on_epoch_end(0)["grad_clip/clipped"] == 0.0


def test_label_smoothing_targets_and_loss_equal_torchs(make_cfg):
    y = torch.tensor([0, 2, 1])
    t = smooth(y, 3, 0.1)
    assert torch.allclose(t.sum(1), torch.ones(3)) and t[0, 0] == pytest.approx(0.9 + 0.1 / 3)
    logits = torch.randn(3, 3)
    assert F.cross_entropy(logits, t) == pytest.approx(float(F.cross_entropy(logits, y, label_smoothing=0.1)))
    with pytest.raises(DlrunError, match="both smooth the labels"):
        build_job(make_cfg("debug=smoke", "trick=label_smoothing", "loss.label_smoothing=0.1"), CPU, print)


@pytest.mark.parametrize("order", ["[mixup,label_smoothing]", "[label_smoothing,mixup]"])
def test_mixup_mixes_inputs_and_targets_in_the_same_proportion(make_cfg, order):
    job = build_job(make_cfg("debug=smoke", f"trick={order}", "trick.mixup.alpha=1.0"), CPU, print)
    x, y = next(job.train.iterate(0))[1]
    torch.manual_seed(3)
    xm, ym = job.tricks.on_batch((x, y), 0)
    assert ym.shape == (len(y), 10) and torch.allclose(ym.sum(1), torch.ones(len(y)))
    assert ym.min() >= 0.1 / 10 * 0.99  # smoothing reached every class, whichever ran first
    torch.manual_seed(3)  # replay the draw: lambda and the permutation
    mix = next(t for t in job.tricks if t.name == "mixup")
    float(torch.rand(()))
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    perm = torch.randperm(len(x))
    assert torch.allclose(xm, lam * x + (1 - lam) * x[perm], atol=1e-6)
    i = next(i for i in range(len(y)) if y[i] != y[perm[i]])
    share = (ym[i, y[i]] - 0.01) / 0.9 if order.startswith("[mixup") else (ym[i, y[i]] - 0.01) / 0.9
    assert float(share) == pytest.approx(lam, abs=1e-4) and mix.alpha == 1.0


def test_cutmix_pastes_a_box_of_the_mixed_area(make_cfg):
    job = build_job(make_cfg("debug=smoke", "trick=mixup", "trick.mixup.alpha=0", "trick.mixup.cutmix_alpha=1.0"),
                    CPU, print)
    x, y = next(job.train.iterate(0))[1]
    xm, ym = job.tricks.on_batch((x, y), 0)
    changed = (xm != x).flatten(1).float().mean(1)  # share of pixels replaced per image
    kept = torch.stack([ym[i, y[i]] for i in range(len(y))])
    mixed = kept < 0.999  # pairs of different classes: the target says how much was pasted
    assert changed.max() > 0 and (changed[mixed] <= 1 - kept[mixed] + 0.02).all()
    assert torch.allclose(1 - kept[mixed], (1 - kept[mixed])[0])  # one lambda per batch
    with pytest.raises(DlrunError, match="needs images"):
        build_job(make_cfg("debug=smoke", "data=mnist1d", "model=conv1d", "trick=mixup", "trick.mixup.cutmix_alpha=1"),
                  CPU, print)


def test_channels_last_layout(make_cfg):
    job = build_job(make_cfg("debug=smoke", "trick=channels_last"), CPU, print)
    conv = next(m for m in job.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = job.tricks.on_batch(next(job.train.iterate(0))[1], 0)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(DlrunError, match="needs images"):
        build_job(make_cfg("debug=smoke", "data=mnist1d", "model=conv1d", "trick=channels_last"), CPU, print)


def test_compile_is_off_on_cpu_by_default_and_checkpoints_plain_keys(make_cfg, tmp_path):
    with pytest.warns(UserWarning, match="off on CPU"):
        job = build_job(make_cfg("debug=smoke", "trick=compile"), CPU, print)
    assert not hasattr(job.model, "_orig_mod")
    cfg = make_cfg("debug=smoke", "epochs=1", "trick=compile", "trick.compile.enabled=true",
                   "trick.compile.backend=eager")
    runner.train(cfg, tmp_path / "run", {}, QUIET)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in ck["model"])


def test_ema_follows_the_warmed_up_formula():
    lin = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(lin.weight)
    ema = EMA(decay=0.9)

    class J:
        base_model = lin
    ema.bind(J())
    expected = 0.0
    for n, w in enumerate([1.0, 2.0, 3.0]):
        with torch.no_grad():
            lin.weight.fill_(w)
        ema.after_step(lin, n)
        d = min(0.9, (1 + n) / (10 + n))
        expected = w if n == 0 else d * expected + (1 - d) * w  # AveragedModel copies on the first update
    assert float(ema.eval_model(lin).weight) == pytest.approx(expected)


def test_ema_is_what_gets_evaluated(make_cfg, tmp_path):
    runner.train(make_cfg("debug=smoke", "trick=ema", "trick.ema.decay=0.99"), tmp_path / "run", {}, QUIET)
    last = rows(tmp_path / "run")[-1]
    assert {"val/acc", "val/plain_acc"} <= set(last) and last["val/loss"] != last["val/plain_loss"]


def test_swa_averages_epoch_end_weights_and_recomputes_batchnorm(make_cfg):
    cfg = make_cfg("debug=smoke", "epochs=4", "data.fraction=0.1", "model=resnet", "model.width=8", "model.depth=1",
                   "trick=swa", "trick.swa.start_frac=0.5")
    job = build_job(cfg, CPU, print)
    swa = next(iter(job.tricks))
    snaps = []
    for e in range(4):
        one_epoch(job, e)
        out = job.tricks.on_epoch_end(e)
        if e >= 2:
            snaps.append({k: v.clone() for k, v in job.model.state_dict().items()})
            assert out["swa/n_averaged"] == len(snaps)
    avg = swa.eval_model(job.model)
    w = "stem.0.weight" if "stem.0.weight" in snaps[0] else next(k for k in snaps[0] if k.endswith("weight"))
    assert torch.allclose(avg.state_dict()[w], (snaps[0][w] + snaps[1][w]) / 2, atol=1e-6)
    bn = next(k for k in snaps[0] if k.endswith("running_mean"))
    assert not torch.allclose(avg.state_dict()[bn], snaps[-1][bn])  # recomputed, not copied from the live model


def test_tta_is_the_mixed_average_in_eval_mode(make_cfg):
    job = build_job(make_cfg("debug=smoke", "trick=tta", "model.dropout=0.5"), CPU, print)
    tta = next(iter(job.tricks))
    x = job.data.val.x[:8]
    job.model.eval()
    out = job.tricks.predict(job.model, x)
    assert torch.equal(out, job.tricks.predict(job.model, x))  # eval mode: dropout off, deterministic
    plain = F.softmax(job.model(x), 1)
    aug = torch.stack([F.softmax(job.model(v(x)), 1) for v in tta.views]).mean(0)
    assert torch.allclose(out.exp(), 0.75 * aug + 0.25 * plain, atol=1e-5) and len(tta.views) == 4
    with pytest.raises(DlrunError, match="tabular"):
        build_job(make_cfg("debug=smoke", "data=tabular", "model=mlp", "trick=tta"), CPU, print)


def test_half_keeps_batchnorm_and_the_loss_in_fp32_and_trains(make_cfg):
    job = build_job(make_cfg("debug=smoke", "data.fraction=0.1", "model=resnet", "model.width=8", "model.depth=1",
                             "trick=half"), CPU, print)
    bns = [m for m in job.model.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in job.model.modules() if isinstance(m, nn.Conv2d)]
    assert bns and all(m.weight.dtype == torch.float32 for m in bns)
    assert all(m.weight.dtype == torch.bfloat16 for m in convs)
    x, y = next(job.train.iterate(0))[1]
    assert job.model(x).dtype == torch.float32
    before = float(F.cross_entropy(job.model(x), y))
    for _ in range(3):
        one_epoch(job)
    assert float(F.cross_entropy(job.model(x), y)) < before
    with pytest.raises(DlrunError, match="both set the precision"):
        build_job(make_cfg("debug=smoke", "trick=[amp,half]"), CPU, print)


def test_switch_optim_switches_at_the_epoch(make_cfg, tmp_path):
    cfg = make_cfg("debug=smoke", "epochs=4", "data.fraction=0.1", "trick=switch_optim", "trick.switch_optim.at_epoch=2")
    runner.train(cfg, tmp_path / "run", {}, QUIET)
    lrs = [float(r["lr"]) for r in rows(tmp_path / "run")]
    assert lrs == [3e-4, 3e-4, 0.01, 0.01]
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert "momentum_buffer" in next(iter(ck["optimizer"]["state"].values()))  # SGD's state
    with pytest.raises(DlrunError, match="both set the schedule"):
        build_job(make_cfg("debug=smoke", "trick=[onecycle,switch_optim]"), CPU, print)


def test_one_weight_average_at_a_time(make_cfg):
    with pytest.raises(DlrunError, match="both set the weight averaging"):
        build_job(make_cfg("debug=smoke", "trick=[ema,swa]"), CPU, print)


@pytest.mark.parametrize("tricks", ["[mixup,label_smoothing,grad_clip]", "ema", "[swa,tta]", "switch_optim"])
def test_a_resumed_run_continues_each_trick_exactly(make_cfg, tmp_path, sigterm_at, tricks):
    over = ("debug=smoke", "epochs=3", "data.fraction=0.15", "data.batch_size=16", f"trick={tricks}",
            "trick.swa.start_frac=0.3" if "swa" in tricks else "seed=0")
    runner.train(make_cfg(*over), tmp_path / "straight", {}, QUIET)
    with sigterm_at(13 + 1 + 5), pytest.raises(runner.Interrupted):  # epoch 1: 13 steps + 1 check; 5 steps more
        runner.train(make_cfg(*over), tmp_path / "outputs" / "a", {}, QUIET)
    runner.train(make_cfg(*over, "resume=auto"), tmp_path / "outputs" / "b", {}, QUIET)
    drop = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs]  # noqa: E731
    assert json.loads((tmp_path / "outputs" / "b" / "resume.json").read_text())["epoch"] == 1
    assert drop(rows(tmp_path / "outputs" / "b")) == drop(rows(tmp_path / "straight"))


def test_tta_calls_the_model_once_per_view_in_eval_mode(make_cfg):
    job = build_job(make_cfg("debug=smoke", "trick=tta"), CPU, print)
    calls = []
    job.model.register_forward_hook(lambda m, args, out: calls.append(m.training))
    job.model.eval()
    job.tricks.predict(job.model, job.data.val.x[:8])
    assert calls == [False] * (1 + 4)  # the plain view and 4 augmented ones, all in eval mode
