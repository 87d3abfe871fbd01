"""Precomputed activations: the cache is the frozen layers' output, only the rest trains,
and a change of weights or data never reuses a stale cache."""
from __future__ import annotations

import pytest
import torch

from dlrunner.modes import train as runner
from dlrunner.build import build_job
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.engine.loop import Meter, TrainState, train_epoch

CPU = torch.device("cpu")


def pc_cfg(make_cfg, tmp_path, *extra):
    return make_cfg("debug=smoke", "data.fraction=0.2", "model=resnet", "model.width=8", "trick=precompute",
                    f"trick.precompute.dir={tmp_path / 'cache'}", *extra)


def test_cache_is_the_frozen_output_and_only_the_tail_trains(make_cfg, tmp_path):
    job = build_job(pc_cfg(make_cfg, tmp_path), CPU, print)
    full = job.full_model
    head = torch.nn.Sequential(*list(full.children())[:-1]).eval()
    with torch.no_grad():
        assert torch.allclose(job.train.x, head(job.data.train.x), atol=1e-5)
    before = {k: v.clone() for k, v in full.state_dict().items()}
    train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision, job.tricks,
                TrainState(), Meter(CPU), lambda: False, lambda *a: None)
    n_tail = len(list(full.children())) - 1
    changed = {k.split(".")[0] for k, v in full.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {str(n_tail)}  # the last top-level layer only; frozen BN stats untouched too


def test_disk_cache_is_reused_only_for_the_same_weights_and_data(make_cfg, tmp_path):
    build_job(pc_cfg(make_cfg, tmp_path, "trick.precompute.storage=disk"), CPU, print)
    (key,) = [p.name for p in (tmp_path / "cache").iterdir()]
    npy = tmp_path / "cache" / key / "train.npy"
    stamp = npy.stat().st_mtime_ns
    job = build_job(pc_cfg(make_cfg, tmp_path, "trick.precompute.storage=disk"), CPU, print)
    assert npy.stat().st_mtime_ns == stamp and isinstance(job.train.x, torch.Tensor)  # reused
    build_job(pc_cfg(make_cfg, tmp_path, "trick.precompute.storage=disk", "seed=1"), CPU, print)  # new weights
    build_job(pc_cfg(make_cfg, tmp_path, "trick.precompute.storage=disk", "data.fraction=0.3"), CPU, print)  # new data
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_checkpoint_holds_the_whole_model(make_cfg, tmp_path):
    cfg = pc_cfg(make_cfg, tmp_path, "epochs=1")
    runner.train(cfg, tmp_path / "run", {}, Reporter(live=False))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    fresh = build_job(make_cfg("debug=smoke", "model=resnet", "model.width=8"), CPU, print).model.state_dict()
    assert set(saved) == set(fresh)


def test_models_that_are_not_a_chain_are_refused(make_cfg, tmp_path):
    with pytest.raises(DlrunError, match="not its layers in sequence|frozen must be in"):
        build_job(make_cfg("debug=smoke", "data=mnist1d", "model=lstm", "trick=precompute",
                           f"trick.precompute.dir={tmp_path}"), CPU, print)


def test_cached_and_uncached_runs_learn_the_same(make_cfg, tmp_path):
    out = {}
    for cache in ("true", "false"):
        cfg = pc_cfg(make_cfg, tmp_path, "epochs=2", f"trick.precompute.cache={cache}")
        runner.train(cfg, tmp_path / cache, {}, Reporter(live=False))
        out[cache] = [r.split(",")[1:5] for r in (tmp_path / cache / "metrics.csv").read_text().splitlines()[1:]]
    for a, b in zip(out["true"], out["false"]):
        assert [float(v) for v in a] == pytest.approx([float(v) for v in b], rel=1e-4)


def test_frozen_part_runs_once_per_sample(make_cfg, tmp_path):
    """Counted on the first frozen layer: one pass over every split at bind, none while training."""
    from dlrunner.build import build_model
    seen = {"n": 0}
    orig = build_model

    def counting(*a, **k):
        model = orig(*a, **k)
        first = next(iter(model.children()))
        first.register_forward_hook(lambda m, args, out: seen.__setitem__("n", seen["n"] + len(args[0])))
        return model
    import dlrunner.build as b
    b.build_model, saved = counting, b.build_model
    try:
        cfg = pc_cfg(make_cfg, tmp_path, "epochs=2")
        runner.train(cfg, tmp_path / "run", {}, Reporter(live=False))
    finally:
        b.build_model = saved
    sizes = __import__("json").loads((tmp_path / "run" / "summary.json").read_text())["data"]
    probe = 4  # the chain check at bind
    assert seen["n"] == sizes["train"] + sizes["val"] + sizes["test"] + probe * 2
