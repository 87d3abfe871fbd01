"""Any two tricks either train together or are refused before training with one clear line."""
from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import pytest
import torch

from dlrunner.modes import train as runner
from dlrunner.build import build_job
from dlrunner.engine.checkpoint import Checkpointer
from dlrunner.cli import CONF_DIR
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.engine.loop import Meter, TrainState, fit
from dlrunner.engine.stop import StopSignal

TRICKS = sorted(p.stem for p in (Path(CONF_DIR) / "trick").glob("*.yaml"))
# the README's list of refused pairs ("Any two tricks either train together or are refused..."), for
# this job (images, a resnet started from trained weights): every other pair trains
SCHEDULE, PREDICTIONS = ("onecycle", "snapshot_ensemble", "switch_optim"), ("tta", "snapshot_ensemble")
REFUSED = {frozenset(p) for p in [
    *itertools.combinations(SCHEDULE, 2), ("amp", "half"), ("ema", "swa"), PREDICTIONS, ("dsd", "prune"),
    *itertools.product(("dsd", "prune"), ("ema", "swa")),
    *(("precompute", t) for t in ("ema", "swa", "tta", "snapshot_ensemble", "progressive_resizing",
                                  "gradual_unfreezing", "half"))]}
CPU = torch.device("cpu")
TINY = ("debug=smoke", "data.fraction=0.06", "epochs=3", "model=resnet", "model.width=4", "model.depth=1",
        "trick.compile.enabled=true", "trick.compile.backend=eager", "trick.lr_finder.num_it=20")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Trained weights for the tricks that need them (gradual_unfreezing)."""
    from hydra import compose, initialize_config_dir

    from dlrunner.reporting.rundir import register_resolvers
    register_resolvers()
    out = tmp_path_factory.mktemp("src")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*TINY[:-3], "epochs=1"])
    runner.train(cfg, out, {}, Reporter(live=False))
    return out


@pytest.mark.parametrize("pair", list(itertools.combinations(TRICKS, 2)), ids="+".join)
def test_pair_trains_or_is_refused_in_one_line(make_cfg, tmp_path, source, pair):
    over = [*TINY, f"trick=[{','.join(pair)}]", f"model.init_from={source}",
            f"trick.precompute.dir={tmp_path / 'cache'}"]
    over = [o for o in over if not o.startswith("trick.") or o.split("=")[0].split(".")[1] in pair]
    refused = None
    try:
        job = build_job(make_cfg(*over), CPU, lambda msg: None)
        job.tricks.before_fit(tmp_path)
        state, quiet = TrainState(), Reporter(live=False)
        quiet.console.quiet = True
        with StopSignal() as stop:  # the loop with plain arguments
            fit(job, state, Meter(CPU), stop, Checkpointer(tmp_path, 1e9), quiet, epochs=3, until=3,
                metric="val/acc", log_every=5, config_yaml="")
        job.tricks.on_train_end()
    except DlrunError as e:
        assert "\n" not in str(e) and any(t in str(e) for t in pair), str(e)
        refused = str(e)
    assert (refused is not None) == (frozenset(pair) in REFUSED), refused or "trained; the README says refused"
    if refused is None:
        assert len(state.history) == 3 and all(math.isfinite(r["train/loss"]) for r in state.history)


@pytest.mark.slow
@pytest.mark.parametrize("tricks", [*TRICKS, "[lr_finder,onecycle,amp]", "[progressive_resizing,half]",
                                    "[channels_last,compile]"])
def test_resume_continues_the_trick_exactly(make_cfg, tmp_path, source, sigterm_at, tricks):
    """Interrupted in the middle of epoch 2, resumed with resume=auto: the same metrics.csv. Every
    conf/trick file alone (a new trick is covered the day it lands), and combinations whose states
    interact (a found LR under a schedule with a GradScaler, resizing in half precision, compile)."""
    over = [o for o in TINY if not o.startswith("trick.") or o.split("=")[0].split(".")[1] in tricks]
    over += [f"trick={tricks}", f"model.init_from={source}", f"trick.precompute.dir={tmp_path / 'cache'}"]
    over = [o for o in over if not o.startswith("trick.precompute") or "precompute" in tricks]
    if "amp" in tricks:
        over.append("trick.amp.dtype=fp16")  # the GradScaler's state must carry over too
    quiet = Reporter(live=False)
    runner.train(make_cfg(*over), tmp_path / "straight", {}, quiet)
    with sigterm_at(3 + 1 + 2), pytest.raises(runner.Interrupted):  # epoch 1: 3 steps + 1 check; 2 steps more
        runner.train(make_cfg(*over), tmp_path / "outputs" / "a", {}, quiet)
    assert torch.load(tmp_path / "outputs" / "a" / "checkpoints" / "last.pt", weights_only=True)["state"]["batch"] == 2
    runner.train(make_cfg(*over, "resume=auto"), tmp_path / "outputs" / "b", {}, quiet)
    read = lambda p: [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader((p / "metrics.csv").open())]  # noqa: E731
    assert read(tmp_path / "outputs" / "b") == read(tmp_path / "straight")
