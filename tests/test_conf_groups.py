"""Every file of conf/optim, conf/schedule, conf/loss and conf/logger does what it is for, so a new
file is tested the day it lands (conf/model, conf/data and conf/trick have their own tests)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from dlrunner.build import build_job
from dlrunner.cli import CONF_DIR
from dlrunner.engine.evaluate import evaluate
from dlrunner.engine.loop import Meter, TrainState, fit
from dlrunner.engine.stop import StopSignal
from dlrunner.engine.checkpoint import Discard
from dlrunner.modes import train as runner
from dlrunner.reporting.console import Reporter

CPU = torch.device("cpu")
SMALL = ("debug=smoke", "data.fraction=0.25")


def files(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def quiet() -> Reporter:
    out = Reporter(live=False)
    out.console.quiet = True
    return out


def train(job, epochs: int) -> TrainState:
    state = TrainState()
    with StopSignal() as stop:
        fit(job, state, Meter(CPU), stop, Discard(), quiet(), epochs=epochs, until=epochs, metric="val/loss",
            log_every=5, config_yaml="")
    return state


@pytest.mark.parametrize("name", files("optim"))
def test_every_optimizer_builds_as_configured_and_learns(make_cfg, name):
    cfg = make_cfg(*SMALL, f"optim={name}", "epochs=3")
    job = build_job(cfg, CPU, print)
    assert type(job.optimizer).__name__.lower() == name  # the file's builder, not a default
    assert all(g["lr"] == pytest.approx(float(cfg.optim.lr)) for g in job.optimizer.param_groups)
    before = evaluate(job.model, job.val, job.loss_fn, job.precision)["val/loss"]
    state = train(job, 3)
    assert state.history[-1]["val/loss"] < 0.9 * before  # three epochs at its own defaults learn something


@pytest.mark.parametrize("name", files("schedule"))
def test_every_schedule_spans_the_run(make_cfg, name):
    """The LR of every step of a 12-epoch run: constant stays at optim.lr; every other schedule moves
    the LR and stays positive; warm-up schedules (onecycle) peak after their start."""
    cfg = make_cfg(*SMALL, f"schedule={name}", "epochs=12")  # longer than step's 10 epochs, sgdr's cycle
    job = build_job(cfg, CPU, print, {"schedule": name})
    lrs = []
    for _ in range(12 * len(job.train)):
        lrs.append(job.optimizer.param_groups[0]["lr"])
        job.optimizer.step()
        job.schedule.step()
    base = float(cfg.optim.lr)
    if name == "constant":
        assert lrs == [pytest.approx(base)] * len(lrs)
        return
    assert len({round(v, 12) for v in lrs}) > 1 and min(lrs) > 0
    if name == "onecycle":
        assert 0 < lrs.index(max(lrs)) < len(lrs) - 1 and lrs[-1] < lrs[0]
    else:
        assert max(lrs) <= base * (1 + 1e-6) and lrs[-1] < base  # anneals from the configured LR


@pytest.mark.parametrize("name", files("loss"))
def test_every_loss_rewards_the_right_class(make_cfg, name):
    """Confident right logits cost less than uniform ones, which cost less than confident wrong ones;
    uniform logits over K classes cost ln K for a cross-entropy."""
    job = build_job(make_cfg(*SMALL, f"loss={name}"), CPU, print)
    y = torch.arange(10) % job.data.num_classes
    right = 8.0 * torch.nn.functional.one_hot(y, job.data.num_classes).float()
    wrong = right.roll(1, dims=1)
    uniform = torch.zeros_like(right)
    costs = [float(job.loss_fn(z, y)) for z in (right, uniform, wrong)]
    assert costs[0] < costs[1] < costs[2]
    if "cross_entropy" in name:
        assert costs[1] == pytest.approx(math.log(job.data.num_classes), rel=1e-5)


def logged_val_acc(name: str, run: Path) -> list[float]:
    """What each logger recorded as val/acc per epoch, read back with its own library's reader."""
    if name == "csv":
        with (run / "metrics.csv").open() as f:
            return [float(r["val/acc"]) for r in csv.DictReader(f)]
    if name == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        ea.Reload()
        return [e.value for e in ea.Scalars("val/acc")]
    if name == "mlflow":
        from tests.test_loggers import mlflow_client

        client = mlflow_client((run / "mlruns").resolve().as_uri())
        (r,) = client.search_runs([client.get_experiment_by_name("dlrun").experiment_id])
        return [h.value for h in sorted(client.get_metric_history(r.info.run_id, "val/acc"), key=lambda h: h.step)]
    if name == "wandb":
        from tests.wandb_file import offline_runs, read_run

        (folder,) = offline_runs(run)
        return [h["val/acc"] for h in read_run(folder).history if "val/acc" in h]
    raise AssertionError(f"conf/logger/{name}.yaml has no reader here: add one")


@pytest.mark.slow
@pytest.mark.parametrize("name", files("logger"))
def test_every_logger_records_the_epochs(make_cfg, tmp_path, monkeypatch, name):
    for k in [k for k in __import__("os").environ if k.startswith("WANDB_")] + ["NETRC"]:
        monkeypatch.delenv(k, raising=False)  # no W&B account: the run stays offline, in the run folder
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    extra = [f"logger.mlflow.tracking_uri={(run / 'mlruns').as_uri()}"] if name == "mlflow" else []
    runner.train(make_cfg("debug=smoke", "data.fraction=0.1", f"logger=[csv,{name}]" if name != "csv" else "logger=csv",
                          *extra), run, {}, quiet())
    with (run / "metrics.csv").open() as f:
        expected = [float(r["val/acc"]) for r in csv.DictReader(f)]
    assert len(expected) == 2 and logged_val_acc(name, run) == pytest.approx(expected, rel=1e-6)
