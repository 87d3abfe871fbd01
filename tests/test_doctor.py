"""The doctor: every planted bug in tests/zoo.py is caught by the right check with the right
diagnosis, and the healthy jobs raise no alarm."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlrunner.build import build_job
from dlrunner.doctor import examine
from dlrunner.doctor.training import curve_shape

# fixed step counts (no time budget): the same verdicts whatever the machine's load
FAST = ["doctor.overfit_steps=120", "doctor.baseline_steps=100", "doctor.time_budget=0"]


@pytest.fixture
def exam(make_cfg, tmp_path):
    def run(*overrides, skip=()):
        cfg = make_cfg(*FAST, *overrides)
        job = build_job(cfg, torch.device("cpu"), lambda m: None)
        opts = OmegaConf.to_container(cfg.doctor, resolve=True)
        opts["skip"] = list(skip)
        return examine(job, tmp_path, opts)
    return run


def status(ex) -> dict[str, str]:
    return {k: f.status for k, f in ex.findings.items()}


def evidence(ex, key: str) -> str:
    return " | ".join(i.evidence for i in ex.findings[key].items)


def failed(ex) -> set[str]:
    return {k for k, s in status(ex).items() if s == "fail"}


SLOW_CHECKS = ("baselines", "capacity")


# --- the zoo ----------------------------------------------------------------------------------

def test_softmax_before_cross_entropy(exam):
    ex = exam("model._target_=tests.zoo.softmax_head", skip=SLOW_CHECKS)
    assert "Softmax" in evidence(ex, "model") and ex.findings["model"].status == "fail"
    assert ex.findings["loss_inputs"].status == "fail"
    assert "probabilities" in evidence(ex, "loss_inputs")
    # the seed's signature: the one-batch loss stalls above ln(e + C - 1) - 1
    assert ex.findings["overfit"].status == "fail"
    floor = math.log(math.e + 9) - 1
    assert ex.findings["overfit"].details["runs"][0]["final"] > floor
    assert ex.causes and ex.causes[0]["cause"] == "incorrect inputs to the loss function"


def test_flipped_loss_sign(exam):
    ex = exam("loss._target_=tests.zoo.FlippedSign", skip=SLOW_CHECKS)
    assert ex.findings["loss_init"].status == "fail" and "sign is flipped" in evidence(ex, "loss_init")
    assert ex.findings["overfit"].status == "fail"
    assert ex.findings["overfit"].details["shape"] in ("goes up", "explodes")
    assert ex.causes[0]["cause"] == "flipped loss or gradient sign"
    assert ex.causes[0]["evidence"]


def test_detached_layer(exam):
    ex = exam("model._target_=tests.zoo.Detached", skip=SLOW_CHECKS)
    f = ex.findings["gradients"]
    assert f.status == "fail"
    assert "get no gradient: features.0.weight, features.0.bias" in evidence(ex, "gradients")
    assert "overfit" not in failed(ex) or ex.causes  # the head alone may still memorize a batch


def test_frozen_layer(exam):
    ex = exam("model._target_=tests.zoo.frozen_layer", skip=SLOW_CHECKS)
    assert ex.findings["gradients"].status == "fail"
    assert "frozen (requires_grad=False): 0.weight, 0.bias" in evidence(ex, "gradients")
    assert "trained from scratch" in evidence(ex, "gradients")


def test_log_of_negative_in_model_names_the_module(exam):
    ex = exam("model._target_=tests.zoo.LogOfNegative", skip=SLOW_CHECKS)
    num = ex.findings["numerics"]
    assert num.status == "fail"
    assert num.details["nonfinite"]["origin"] == "1" or num.details["nonfinite"]["module_type"] == "LogLayer"
    assert num.details["nonfinite"]["module_type"] == "LogLayer"


def test_log_of_negative_in_loss(exam):
    ex = exam("loss._target_=tests.zoo.NllOfLogits", skip=SLOW_CHECKS)
    num = ex.findings["numerics"]
    assert num.status == "fail" and num.details["nonfinite"]["origin"] == "loss"
    assert "log" in num.items[0].fix
    assert ex.findings["overfit"].details["shape"] == "explodes"
    assert ex.causes[0]["cause"] == "numerical instability (log/exp/div)"


def test_labels_shuffled(exam):
    ex = exam("data._target_=tests.zoo.shuffled_labels", "model._target_=tests.zoo.healthy",
              skip=("capacity",))
    b = ex.findings["baselines"]
    assert b.status == "fail", evidence(ex, "baselines")
    assert "labels do not match the inputs" in b.items[0].fix
    # the real run is no better than training on shuffled labels: within 2 points
    assert b.details["margin"] < 0.02
    assert ex.findings["overfit"].details["working_factor"] is not None  # a batch can be memorized: it is the data
    assert "no better than a baseline" in b.items[0].evidence


def test_inputs_not_normalized(exam):
    ex = exam("data._target_=tests.zoo.unscaled", "data.normalize=false", "model._target_=tests.zoo.healthy",
              skip=SLOW_CHECKS)
    d = ex.findings["data"]
    assert d.status == "fail"
    assert "raw 0-255" in evidence(ex, "data")
    assert d.details["range"][1] == 255.0


def test_model_stuck_in_eval_mode(exam):
    ex = exam("model._target_=tests.zoo.StuckInEval", skip=SLOW_CHECKS)
    m = ex.findings["mode"]
    assert m.status == "fail" and "stuck in eval mode" in evidence(ex, "mode")
    assert "net.6" in evidence(ex, "mode")  # the dropout layer is named


def test_lr_far_too_high(exam):
    ex = exam("optim=sgd", "optim.lr=30", skip=SLOW_CHECKS)
    o = ex.findings["overfit"]
    assert o.status == "fail"
    assert o.details["runs"][0]["shape"] in ("explodes", "oscillates", "goes up")
    assert ex.causes[0]["cause"] == "learning rate too high", ex.causes
    assert ex.causes[0]["evidence"]


def test_lr_far_too_low(exam):
    ex = exam("optim.lr=1e-8", skip=SLOW_CHECKS)
    o = ex.findings["overfit"]
    assert o.status == "fail" and o.details["runs"][0]["shape"] == "plateaus"
    assert ex.causes[0]["cause"] == "learning rate too low"
    assert "below 1e-5" in ex.causes[0]["evidence"] or "higher LR" in ex.causes[0]["evidence"]
    assert "too low" in evidence(ex, "gradients")


def test_metric_counter_never_reset(exam):
    ex = exam("loss._target_=tests.zoo.RunningMeanLoss", skip=SLOW_CHECKS)
    lg = ex.findings["logging"]
    assert lg.status == "fail" and "keeps state between calls" in evidence(ex, "logging")


def test_lr_diagnosed_when_a_lower_lr_fixes_it(exam):
    """Rerunning at x0.1 / x10 tells an LR problem from a bug."""
    ex = exam("optim=sgd", "optim.lr=3", "optim.momentum=0.9", skip=SLOW_CHECKS)
    o = ex.findings["overfit"]
    assert o.status == "fail"
    factors = [r["factor"] for r in o.details["runs"]]
    assert factors[:3] == [1.0, 0.1, 10.0]
    assert o.details.get("diagnosis") in ("learning rate too high", "bug")
    if o.details["diagnosis"] == "learning rate too high":
        assert "optim.lr=" in o.items[0].fix


# --- healthy jobs: no false alarm ---------------------------------------------------------------

HEALTHY = [
    [],  # the default job: lenet on digits
    ["model=resnet", "model.width=16", "doctor.baseline_steps=40", "doctor.skip=[capacity]"],  # kept short: a quarter of the width
    ["data=mnist1d", "model=lstm"],
    ["data=mnist1d", "model=conv1d"],
    ["data=mnist1d", "model=transformer"],
    ["data=tabular", "model=mlp"],
    ["data=mnist1d", "model=mlp"],
    ["model._target_=tests.zoo.SmallBatchNormNet"],  # a small BatchNorm net: no capacity false alarm
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", HEALTHY, ids=lambda o: "-".join(o) or "default")
def test_healthy_rungs_pass_every_check(make_cfg, tmp_path, overrides):
    cfg = make_cfg("doctor.time_budget=0", *overrides)  # the default budgets in steps, whatever the load
    job = build_job(cfg, torch.device("cpu"), lambda m: None)
    ex = examine(job, tmp_path, OmegaConf.to_container(cfg.doctor, resolve=True))
    problems = {k: [i.evidence for i in f.items if i.status in ("warn", "fail")] for k, f in ex.findings.items()}
    assert not any(problems.values()), problems
    assert ex.findings["memory"].status == "skip"  # CPU


# --- the curve classifier -------------------------------------------------------------------

def test_curve_shapes():
    down = [2.3 * 0.95**i for i in range(200)]
    assert curve_shape(down, [0.5] * 200) == "converges"
    assert curve_shape([2.3, 2.0, 1.0, 0.9], [0.1, 0.5, 1.0, 1.0]) == "converges"
    assert curve_shape([2.3, 5.0, 40.0], [0.1] * 3) == "explodes"
    assert curve_shape([2.3, 2.0, float("nan")], [0.1] * 3) == "explodes"
    assert curve_shape([2.3 + 0.02 * i for i in range(100)], [0.1] * 100) == "goes up"
    osc = [2.0 + (0.8 if i % 2 else -0.8) for i in range(100)]
    assert curve_shape(osc, [0.3] * 100) == "oscillates"
    flat = [2.3 - 1e-5 * i for i in range(200)]
    assert curve_shape(flat, [0.1] * 200) == "plateaus"
    slow = [2.3 - 0.005 * i for i in range(200)]
    assert curve_shape(slow, [0.5] * 200) == "slow"


# --- the command --------------------------------------------------------------------------------

@pytest.mark.slow
def test_dlrun_mode_doctor_writes_reports_and_gates_ci(dlrun):
    ok = dlrun("mode=doctor", "debug=smoke", *FAST)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "doctor: PASS" in ok.stdout
    run = ok.run_dirs()[-1]
    doc = json.loads((run / "doctor.json").read_text())
    assert doc["status"] == "pass" and doc["counts"]["fail"] == 0
    assert [c["key"] for c in doc["checks"]][:3] == ["data", "model", "loss_init"]
    assert (run / "samples.png").stat().st_size > 1000
    md = (run / "doctor.md").read_text()
    assert "| ✓ | Single-batch overfit |" in md and "## Layers" in md
    shutil.copy(Path(__file__).parent / "zoo.py", dlrun.cwd / "zoo.py")  # the user's own module, in the cwd
    bad = dlrun("mode=doctor", "debug=smoke", "model._target_=zoo.softmax_head", "doctor.skip=[capacity,baselines]",
                *FAST)
    assert bad.returncode == 1
    assert "✗ Model look" in bad.stdout and "fix: remove it" in bad.stdout
    doc = json.loads((bad.run_dirs()[-1] / "doctor.json").read_text())
    assert doc["status"] == "fail" and doc["causes"]


def test_unknown_skip_is_one_line(dlrun):
    r = dlrun("mode=doctor", "doctor.skip=[nope]")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("dlrun: error: doctor.skip: unknown check 'nope'")


# --- training stops on NaN with the localization -------------------------------------------------

@pytest.mark.slow
def test_nan_during_training_stops_with_localization(dlrun):
    r = dlrun("optim=sgd", "optim.lr=50", "epochs=3", "data.fraction=0.3")
    assert r.returncode == 3
    assert "non-finite loss" in r.stderr
    assert "first produced by module" in r.stdout or "the weights are already non-finite" in r.stdout
    s = r.summary()
    assert s["status"] == "diverged"
    assert s["nonfinite"]["origin"] not in (None, "inputs")
    assert s["nonfinite"]["step"] >= 0


# --- more of the checklist, planted by hand -------------------------------------------------------

def test_softmax_over_the_wrong_dim(exam):
    ex = exam("model._target_=tests.zoo.softmax_wrong_dim", skip=SLOW_CHECKS + ("overfit",))
    assert "softmax over the wrong dimension" in evidence(ex, "loss_inputs")


def test_prediction_target_broadcasting(exam):
    ex = exam("loss._target_=tests.zoo.BroadcastMSE", skip=SLOW_CHECKS + ("overfit",))
    assert ex.findings["loss_inputs"].status == "fail"
    assert "broadcast" in evidence(ex, "loss_inputs")


def test_parameters_missing_from_the_optimizer(make_cfg, tmp_path):
    cfg = make_cfg()
    job = build_job(cfg, torch.device("cpu"), lambda m: None)
    head = set(map(id, job.model.classifier[-1].parameters()))
    for g in job.optimizer.param_groups:
        g["params"] = [p for p in g["params"] if id(p) not in head]
    ex = examine(job, tmp_path, {"skip": ["overfit", "baselines", "capacity"]})
    assert "2 trainable tensors are not in the optimizer: classifier.5.weight, classifier.5.bias" \
        in evidence(ex, "gradients")


def test_dead_relus_and_vanishing_gradients(make_cfg, tmp_path):
    cfg = make_cfg()
    job = build_job(cfg, torch.device("cpu"), lambda m: None)
    with torch.no_grad():
        job.model.features[0].bias.fill_(-100.0)  # every first-layer unit is off for every input
    ex = examine(job, tmp_path, {"skip": ["overfit", "baselines", "capacity"]})
    ev = evidence(ex, "gradients")
    assert "`features.1`: 100% of its 6 ReLU units are dead" in ev
    assert "all-zero gradient: features.0.weight, features.0.bias" in ev


def test_saturated_tanh_and_unnormalized_features(exam):
    ex = exam("data=tabular", "data.normalize=false", "model=mlp", "model.act=tanh", skip=SLOW_CHECKS)
    assert ex.findings["data"].status in ("warn", "fail") and "not normalized" in evidence(ex, "data")
    assert "saturate (|x| >= 5)" in evidence(ex, "gradients")
