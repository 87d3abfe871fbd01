"""doctor.repair=true: the LR-too-high, LR-too-low and unnormalized-input cases of the zoo are
cured by a re-run with the remedy applied, and the report says so with the override; a code-level
cause is not "repaired" by a config change."""
from __future__ import annotations

import json
import re

import pytest
import torch
from omegaconf import OmegaConf

from dlrunner.build import build_job
from dlrunner.doctor import examine, repair
from dlrunner.modes.doctor import attempt_repairs
from tests.test_doctor import FAST

SKIP = ["baselines", "capacity"]


def doctor_with_repair(make_cfg, tmp_path, *overrides):
    cfg = make_cfg(*FAST, *overrides)
    job = build_job(cfg, torch.device("cpu"), lambda m: None)
    ex = examine(job, tmp_path, {**OmegaConf.to_container(cfg.doctor, resolve=True), "skip": SKIP})
    return ex, attempt_repairs(ex, cfg, {}, tmp_path)


@pytest.mark.slow
def test_repair_cures_a_learning_rate_far_too_high(dlrun):
    r = dlrun("mode=doctor", "doctor.repair=true", "optim=sgd", "optim.lr=30", "doctor.skip=[baselines,capacity]",
              *FAST)
    assert r.returncode == 1  # the job as configured still fails; the report says how to fix it
    line = next(x for x in r.stdout.splitlines() if "learning rate too high: cured" in x)
    lr = float(re.search(r"use `optim.lr=(\S+)`", line).group(1))
    assert lr <= 3.0  # lower, as the evidence said
    assert "single-batch loss now converges at lr" in line
    doc = json.loads((r.run_dirs()[-1] / "doctor.json").read_text())
    fix = next(x for x in doc["repairs"] if x["cause"] == "learning rate too high")
    assert fix["cured"] is True and fix["override"] == [f"optim.lr={lr:g}"]


@pytest.mark.slow
def test_repair_cures_a_learning_rate_far_too_low(make_cfg, tmp_path):
    ex, fixes = doctor_with_repair(make_cfg, tmp_path, "optim.lr=1e-8")
    fix = next(f for f in fixes if f.cause == "learning rate too low")
    assert fix.cured is True and fix.override[0].startswith("optim.lr=")
    assert float(fix.override[0].split("=")[1]) >= 1e-6
    assert fix.evidence.startswith("single-batch loss now converges at lr")


def test_repair_cures_inputs_not_normalized(make_cfg, tmp_path):
    ex, fixes = doctor_with_repair(make_cfg, tmp_path, "data._target_=tests.zoo.unscaled", "data.normalize=false",
                                   "model._target_=tests.zoo.healthy")
    assert ex.findings["data"].status == "fail"
    fix = next(f for f in fixes if f.cause == "inputs not normalized")
    assert fix.cured is True and fix.override == ["data.normalize=true"]
    assert "data look pass" in fix.evidence and "(converges)" in fix.evidence
    assert any("cured" in line and "use `data.normalize=true`" in line for line in repair.lines(fixes))


def test_code_level_cause_points_at_the_code(make_cfg, tmp_path):
    ex, fixes = doctor_with_repair(make_cfg, tmp_path, "model._target_=tests.zoo.softmax_head")
    assert fixes and all(f.cured is None and not f.override for f in fixes)
    assert "incorrect inputs to the loss function" in [f.cause for f in fixes]
    assert all("not a config fix" in line for line in repair.lines(fixes))


def test_repair_lowers_too_much_dropout(make_cfg, tmp_path):
    ex, fixes = doctor_with_repair(make_cfg, tmp_path, "model.dropout=0.9")
    assert ex.causes[0]["cause"] == "too much regularization" and "dropout 0.9" in ex.causes[0]["evidence"]
    fix = next(f for f in fixes if f.cause == "too much dropout")
    assert fix.cured is True and fix.override == ["model.dropout=0.225"]


@pytest.mark.slow
def test_repair_raises_a_batch_too_small_for_batchnorm(make_cfg, tmp_path):
    # a BatchNorm MLP trained in batches of 2 cannot memorize 128 samples under eval-mode statistics
    cfg = make_cfg(*FAST, "model._target_=tests.zoo.BatchNormMLP", "data.batch_size=2")
    job = build_job(cfg, torch.device("cpu"), lambda m: None)
    ex = examine(job, tmp_path, {**OmegaConf.to_container(cfg.doctor, resolve=True), "skip": ["baselines"]})
    cap = ex.findings["capacity"]
    assert cap.status in ("warn", "fail") and cap.details["small_batchnorm"] == 2
    assert "batch too small for BatchNorm" in cap.summary and "data.batch_size=32" in cap.items[-1].fix
    fixes = attempt_repairs(ex, cfg, {}, tmp_path)
    fix = next(f for f in fixes if f.cause == "batch too small for BatchNorm")
    assert fix.cured is True and fix.override == ["data.batch_size=32"]
    assert fix.evidence.startswith("with data.batch_size=32: capacity pass")
