"""Every conf/trick file, smoke-run through the real `dlrun`, reports what it did in summary.json."""
from __future__ import annotations

from pathlib import Path

import pytest

from dlrunner.cli import CONF_DIR

pytestmark = pytest.mark.slow
TRICKS = sorted(p.stem for p in (Path(CONF_DIR) / "trick").glob("*.yaml"))
RESNET = ["model=resnet", "model.width=8", "model.depth=1"]
EXTRA = {  # what a trick needs to apply at all, on a seconds-long run
    "progressive_resizing": RESNET, "precompute": RESNET, "gradual_unfreezing": RESNET,
    "dsd": ["epochs=3"], "snapshot_ensemble": ["epochs=2", "trick.snapshot_ensemble.cycles=2"],
    "switch_optim": ["epochs=2", "trick.switch_optim.at_epoch=1"], "lr_finder": ["trick.lr_finder.num_it=30"],
    "compile": ["trick.compile.enabled=true", "trick.compile.backend=eager"],
    "prune": ["trick.prune.at_epoch=1"],
}
PLAIN = [t for t in TRICKS if t not in EXTRA]  # need nothing special: one multirun runs them all
EXPECT = {  # one key of summary.json's tricks.<name> that proves the trick acted, and a check of its value
    "lr_finder": ("suggestion", lambda v: 1e-7 < v < 10), "onecycle": ("max_lr", lambda v: v == pytest.approx(3e-4)),
    "amp": ("dtype", lambda v: v == "bf16"), "half": ("dtype", lambda v: v == "bfloat16"),
    "tta": ("views", lambda v: v == 4), "progressive_resizing": ("sizes", lambda v: v[0] < v[-1] == 28),
    "gradual_unfreezing": ("unfrozen", lambda v: v == 2), "precompute": ("seconds_to_cache", lambda v: v > 0),
    "snapshot_ensemble": ("snapshots", lambda v: v == 2), "swa": ("n_averaged", lambda v: v >= 1),
    "ema": ("updates", lambda v: v > 0), "dsd": ("final_zero_share", lambda v: v < 0.3),
    "prune": ("prune/sparsity", lambda v: v == pytest.approx(0.5, abs=1e-3)),
    "switch_optim": ("switched", lambda v: v is True), "label_smoothing": ("eps", lambda v: v == 0.1),
    "mixup": ("alpha", lambda v: v == 0.2), "grad_clip": ("max_norm", lambda v: v == 1.0),
    "channels_last": ("memory_format", lambda v: v == "channels_last"), "compile": ("compiled", lambda v: v is True),
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    import subprocess
    import sys
    d = tmp_path_factory.mktemp("src")
    subprocess.run([sys.executable, "-m", "dlrunner", "debug=smoke", "epochs=1", *RESNET, "hydra.run.dir=src"],
                   cwd=d, check=True, capture_output=True)
    return d / "src"


def test_every_trick_is_covered_here():
    assert set(TRICKS) == set(EXPECT)


def check_report(summary: dict, name: str) -> None:
    report = summary["tricks"][name]
    key, check = EXPECT[name]
    assert check(report[key]), report


def test_plain_tricks_smoke_run_in_one_multirun(dlrun):
    r = dlrun("-m", "debug=smoke", f"trick={','.join(PLAIN)}")
    assert r.returncode == 0, r.stderr[-2000:]
    runs = r.run_dirs()
    assert len(runs) == len(PLAIN)
    for run in runs:
        summary = r.summary(run)
        (name,) = summary["tricks"]
        check_report(summary, name)


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_trick_smoke_runs_and_reports(dlrun, source, name):
    args = ["debug=smoke", f"trick={name}", *EXTRA.get(name, [])]
    if name == "gradual_unfreezing":
        args.append(f"model.init_from={source}")
    r = dlrun(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    check_report(r.summary(), name)
