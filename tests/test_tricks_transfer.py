"""Transfer learning: model.init_from and gradual unfreezing with discriminative LRs."""
from __future__ import annotations

import pytest
import torch

from dlrunner.modes import train as runner
from dlrunner.build import build_job
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.engine.loop import Meter, TrainState, train_epoch
from dlrunner.tricks.gradual_unfreezing import discriminative_lrs

CPU = torch.device("cpu")


@pytest.fixture
def source_run(make_cfg, tmp_path):
    """A small resnet trained on digits 0-4: the 'other classes' a user transfers from."""
    cfg = make_cfg("debug=smoke", "epochs=1", "data.fraction=0.2", "model=resnet", "model.width=8",
                   "data.classes=[0,1,2,3,4,5]")
    runner.train(cfg, tmp_path / "src", {}, Reporter(live=False))
    return tmp_path / "src"


def target_cfg(make_cfg, src, *extra):
    return make_cfg("debug=smoke", "data.fraction=0.2", "model=resnet", "model.width=8", "data.classes=[6,7,8,9]",
                    f"model.init_from={src}", *extra)


def test_init_from_loads_matching_tensors_and_keeps_a_fresh_head(make_cfg, source_run):
    notes = []
    job = build_job(target_cfg(make_cfg, source_run), CPU, notes.append)
    saved = torch.load(source_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    own = job.model.state_dict()
    shared = [k for k, v in own.items() if k in saved and v.shape == saved[k].shape]
    assert len(shared) > 10 and all(torch.equal(own[k], saved[k]) for k in shared)
    head = [k for k in own if k in saved and own[k].shape != saved[k].shape]
    assert head  # 6 -> 4 classes: the head could not be loaded
    assert any("init_from: loaded" in n and "fresh:" in n for n in notes)


def test_gradual_unfreezing_head_first_then_one_group_per_epoch(make_cfg, source_run):
    job = build_job(target_cfg(make_cfg, source_run, "trick=gradual_unfreezing", "epochs=3"), CPU, print)
    gu = next(iter(job.tricks))
    n = len(gu.groups)
    lrs = [g["lr"] for g in job.optimizer.param_groups]
    assert lrs == pytest.approx(discriminative_lrs(3e-4, n, 100.0))
    assert lrs[0] == pytest.approx(3e-6) and lrs[-1] == pytest.approx(3e-4)
    assert all(lrs[i + 1] / lrs[i] == pytest.approx(lrs[1] / lrs[0]) for i in range(n - 1))  # geometric
    for epoch in range(3):
        job.tricks.on_epoch_start(epoch)
        trainable = [all(p.requires_grad for p in g.parameters()) for g in gu.groups]
        assert trainable == [i >= n - (epoch + 1) for i in range(n)]
        frozen = {k: v.clone() for k, v in job.model.state_dict().items()}  # weights AND BN buffers
        train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision, job.tricks,
                    TrainState(epoch=epoch), Meter(CPU), lambda: False, lambda *a: None)
        for i, g in enumerate(gu.groups):
            names = {f"{gn}.{k}" for gn, m in job.model.named_children() if m is g for k in m.state_dict()}
            changed = [k for k in names if not torch.equal(frozen[k], job.model.state_dict()[k])]
            assert bool(changed) == trainable[i], (epoch, i, changed[:3])


def test_gradual_unfreezing_needs_trained_weights(make_cfg):
    with pytest.raises(DlrunError, match="needs a model that starts from trained weights"):
        build_job(make_cfg("debug=smoke", "trick=gradual_unfreezing"), CPU, print)


def test_onecycle_keeps_discriminative_ratios(make_cfg, source_run):
    job = build_job(target_cfg(make_cfg, source_run, "trick=[gradual_unfreezing,onecycle]",
                               "trick.onecycle.max_lr=1e-2"), CPU, print)
    peaks = job.schedule.max_lrs if hasattr(job.schedule, "max_lrs") else [g["max_lr"] for g in job.optimizer.param_groups]
    assert peaks[-1] == pytest.approx(1e-2) and peaks[0] == pytest.approx(1e-4)
