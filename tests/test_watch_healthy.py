"""Healthy runs raise no watch finding: the default job trained until its loss has converged (where
a converged loss's wobble once read as "the loss oscillates"), a smoke run of every conf/trick file
(several set the LR themselves: swa, onecycle, lr_finder, snapshot_ensemble's warm restarts) and
every model rung that runs on bundled data. Each run trains in this process (no start-up cost)."""
from __future__ import annotations

import json

import pytest

from dlrunner.modes import train as runner
from dlrunner.reporting.console import Reporter
from dlrunner.watch_rules import WINDOW, Rules
from tests.test_tricks_cli import EXTRA, TRICKS

pytestmark = pytest.mark.slow
SMALL_RESNET = ["model.width=8", "model.depth=1"]


def findings(make_cfg, run_dir, *overrides: str) -> dict:
    runner.train(make_cfg(*overrides), run_dir, {}, Reporter(live=False))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary.get("error")
    return summary["watch"]


def test_the_default_job_trained_to_convergence_raises_nothing(make_cfg, tmp_path):
    # a quarter of digits: 11 steps an epoch, 25 epochs drive the training loss from ~2.3 to ~0.01,
    # long enough (275 steps) for the oscillation rule's 7 windows of 10 steps to sit on the floor
    watch = findings(make_cfg, tmp_path, "data.fraction=0.25", "epochs=25", "device=cpu", "plots=none")
    assert watch["checks"] >= 15 and watch["findings"] == []


# swa with swa_lr holds its own LR behind a schedule of its own from the averaging epoch on
LR_KNOBS = {"swa": ["trick.swa.swa_lr=1e-4", "trick.swa.start_frac=0.5"]}


@pytest.mark.parametrize("name", TRICKS + [f"{t}+lr" for t in LR_KNOBS])
def test_every_trick_smoke_run_raises_nothing(make_cfg, tmp_path, name):
    name, knobs = (name[:-3], LR_KNOBS[name[:-3]]) if name.endswith("+lr") else (name, [])
    extra = list(EXTRA.get(name, [])) + knobs
    if name == "gradual_unfreezing":  # needs weights of the same model to start from
        findings(make_cfg, tmp_path / "src", "debug=smoke", "epochs=1", *extra, *SMALL_RESNET, "plots=none")
        extra.append(f"model.init_from={tmp_path / 'src'}")
    if "model=resnet" in extra:
        extra += SMALL_RESNET
    watch = findings(make_cfg, tmp_path / "run", "debug=smoke", f"trick={name}", *extra, "plots=none")
    assert watch["findings"] == [], watch


RUNGS = [["data=digits", f"model={m}"] for m in ("lenet", "resnet", "resnet18", "resnet50")] + \
    [["data=mnist1d", "data.num_samples=600", f"model={m}"] for m in ("lstm", "conv1d", "transformer")] + \
    [["data=tabular", "model=mlp", f"model.depth={d}"] for d in (1, 2, 3)]


@pytest.mark.parametrize("rung", RUNGS, ids=lambda r: "-".join(v.split("=")[1] for v in r))
def test_every_rung_on_bundled_data_raises_nothing(make_cfg, tmp_path, rung):
    big = rung[-1] in ("model=resnet18", "model=resnet50")  # seconds a step on a CPU: a few steps tell (resnet34: resnet18's blocks)
    watch = findings(make_cfg, tmp_path, "debug=smoke", *rung, *(["data.fraction=0.05", "epochs=1"] if big else []),
                     "plots=none")
    assert watch["findings"] == [], watch


def feed(rules: Rules, losses: list[float]) -> set[str]:
    kinds = set()
    for i in range(0, len(losses), WINDOW):
        rules.add_losses(losses[i:i + WINDOW])
        kinds |= {k for k, _, _ in rules.check(i, None, None, [0.1], [0.1], False, [])}
    return kinds


def test_oscillation_is_judged_against_where_the_loss_started():
    start = [2.3] * WINDOW
    # converged: a loss near 0.01 that wobbles by half its own size, window after window
    converged = start + [2.3 * 0.9 ** i for i in range(60)] + [0.01 if (i // WINDOW) % 2 else 0.016 for i in range(80)]
    assert "loss_oscillates" not in feed(Rules(), converged)
    # a real oscillation: the loss swings between 2.2 and 1.0 with no net progress
    swinging = start + [1.0 if (i // WINDOW) % 2 else 2.2 for i in range(80)]
    assert "loss_oscillates" in feed(Rules(), swinging)
