"""The doctor's second round: functional activations, the bug signatures and the capacity
check's limits, each planted in tests/zoo.py and named right."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from dlrunner.build import build_job
from dlrunner.doctor import examine
from dlrunner.doctor.activations import Observer
from tests.test_doctor import FAST, evidence

SLOW_CHECKS = ("baselines", "capacity")


@pytest.fixture
def exam(make_cfg, tmp_path):
    def run(*overrides, skip=SLOW_CHECKS, opts=None):
        cfg = make_cfg(*FAST, *overrides)
        job = build_job(cfg, torch.device("cpu"), lambda m: None)
        o = {**OmegaConf.to_container(cfg.doctor, resolve=True), "skip": list(skip), **(opts or {})}
        return examine(job, tmp_path, o)
    return run


class Mixed(nn.Module):
    """Activations as a module, as functions and as a tensor method."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(4, 6), nn.Linear(6, 5), nn.ReLU()
        with torch.no_grad():
            self.fc2.bias.fill_(-100.0)  # every unit of the functional ReLU is off

    def forward(self, x):
        h = self.act(self.fc1(x))
        h = F.relu(self.fc2(h))
        return torch.tanh(h * 0 + 10).sigmoid()


def test_observer_sees_functions_and_names_module_path_plus_operation():
    m = Mixed()
    with torch.no_grad(), Observer(m) as obs:
        m(torch.randn(32, 4))
    assert set(obs.sites) == {"act", "Mixed (F.relu after fc2)", "Mixed (torch.tanh)", "Mixed (Tensor.sigmoid)"}
    assert obs.sites["Mixed (F.relu after fc2)"].dead == 1.0 and obs.sites["Mixed (F.relu after fc2)"].units == 5
    assert obs.sites["Mixed (torch.tanh)"].saturated == 32 * 5  # every input is 10: |x| >= 5
    assert obs.sites["Mixed (Tensor.sigmoid)"].saturated == 0  # tanh(10) ~ 1
    assert obs.sites["act"].dead < 1.0


def test_functional_tanh_saturation_is_seen(exam):
    ex = exam("model._target_=tests.zoo.FunctionalTanh", skip=SLOW_CHECKS + ("overfit",))
    ev = evidence(ex, "gradients")
    assert "`FunctionalTanh (torch.tanh after fc1)`:" in ev and "saturate" in ev
    assert "`FunctionalTanh (torch.tanh after fc2)`:" in ev
    assert ex.findings["gradients"].status == "warn"


def test_nan_origin_names_the_operation(exam):
    ex = exam("model._target_=tests.zoo.LogOfNegative", skip=SLOW_CHECKS + ("overfit",))
    nf = ex.findings["numerics"].details["nonfinite"]
    assert (nf["origin"], nf["module_type"], nf["operation"]) == ("log", "LogLayer", "log")
    assert "by `log`" in evidence(ex, "numerics")


def test_summed_loss(exam):
    ex = exam("loss._target_=tests.zoo.SummedLoss", skip=SLOW_CHECKS + ("overfit",))
    assert ex.findings["loss_init"].status == "fail"
    assert "= 32 x ln C: it is summed over the batch (reduction='sum')" in evidence(ex, "loss_init")


def test_nll_on_raw_logits(exam):
    ex = exam("loss._target_=tests.zoo.NllOfRawLogits")
    assert "NLL applied to raw logits" in evidence(ex, "loss_init")
    assert "sign is flipped" not in evidence(ex, "loss_init")
    assert "raw logits reach an NLL loss" in evidence(ex, "loss_inputs")
    assert ex.causes[0]["cause"] == "incorrect inputs to the loss function"


def test_model_that_ignores_its_input(exam):
    ex = exam("model._target_=tests.zoo.IgnoresInput")
    assert "the model ignores its input" in evidence(ex, "model") and ex.findings["model"].status == "fail"
    assert "ignores the labels" not in evidence(ex, "loss_inputs")  # a consequence, not a second bug
    assert ex.causes[0]["cause"] == "the model ignores its input"


def test_head_of_the_wrong_width(exam):
    ex = exam("model._target_=tests.zoo.wrong_width_head", skip=SLOW_CHECKS + ("overfit",))
    assert "the model outputs (8, 12) for a batch of 8, the data has 10 classes" in evidence(ex, "model")


def test_gradient_cut_by_data(exam):
    ex = exam("model._target_=tests.zoo.DataCut", skip=SLOW_CHECKS + ("overfit",))
    assert "forward cuts the gradient at `DataCut (.data after features)`" in evidence(ex, "gradients")
    assert "get no gradient: features.0.weight, features.0.bias" in evidence(ex, "gradients")


def test_constant_inputs(exam):
    ex = exam("data._target_=tests.zoo.constant_inputs", "model._target_=tests.zoo.healthy")
    assert "training inputs are identical" in evidence(ex, "data") and ex.findings["data"].status == "fail"
    assert ex.causes[0]["cause"] == "the inputs carry no signal"


def test_labels_independent_of_inputs(exam):
    ex = exam("data._target_=tests.zoo.random_labels", "model._target_=tests.zoo.healthy", skip=("capacity",))
    b = ex.findings["baselines"]
    assert b.status == "fail" and "labels do not match the inputs" in b.items[0].fix


def test_capacity_names_the_step_budget(exam):
    ex = exam("doctor.capacity_steps=8", skip=("baselines", "overfit"))
    f = ex.findings["capacity"]
    assert f.status in ("warn", "fail") and f.details["limit"] == "steps"
    assert "the step budget doctor.capacity_steps=8 (2 epochs of 4 steps) ran out" in f.items[0].evidence


def test_capacity_cut_by_time_is_inconclusive_not_a_warning(make_cfg, tmp_path):
    """A slow check is not a sick model: when the time budget stops a run that is still rising,
    the verdict is inconclusive and the evidence names doctor.time_budget."""
    from dlrunner.doctor.capacity import capacity
    from dlrunner.doctor.core import Exam

    cfg = make_cfg("optim.lr=1e-5")
    job = build_job(cfg, torch.device("cpu"), lambda m: None)
    ex = Exam(job, {"time_budget": 1, "capacity_steps": 1000})
    ex.step_time = 1.0  # as measured on a machine where a step takes a second: 0.3 s share -> the 120-step floor
    f = capacity(ex)
    assert f.details["limit"] == "time" and f.details["max_epochs"] == 30
    assert f.status == "skip", f.items[0].evidence
    assert "still rising when the time budget (doctor.time_budget=1 s (1000 ms a step))" in f.items[0].evidence
    assert "raise doctor.time_budget" in f.items[0].evidence
