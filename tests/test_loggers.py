"""Loggers: TensorBoard and MLflow files read back with those libraries' own readers."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from dlrunner.modes import train as runner
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.reporting.loggers import flatten

RUN = ("epochs=2", "data.fraction=0.2")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}


def rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a local folder store on request
    return MlflowClient(uri)


def mlflow_runs(store: Path) -> tuple:
    client = mlflow_client(store.resolve().as_uri())
    exp = client.get_experiment_by_name("dlrun")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> Path:
    """One real `dlrun` with all three loggers; returns the run folder (mlruns/ is beside outputs/)."""
    cwd = tmp_path_factory.mktemp("loggers")
    r = subprocess.run([sys.executable, "-m", "dlrunner", "logger=[csv,tensorboard,mlflow]", *RUN,
                        "logger.tensorboard.hist_every=1"], cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr
    (run,) = [p.parent for p in (cwd / "outputs").rglob("summary.json")]
    return run


def accumulator(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    ea.Reload()
    return ea


def test_logger_group_composes_one_node_per_logger(make_cfg):
    assert list(make_cfg().logger) == ["csv"]
    cfg = make_cfg("logger=[csv,tensorboard,mlflow]", "logger.tensorboard.hist_every=2")
    assert list(cfg.logger) == ["csv", "tensorboard", "mlflow"] and cfg.logger.tensorboard.hist_every == 2
    assert cfg.logger.mlflow._target_ == "dlrunner.reporting.loggers.MLflowLogger"


@pytest.mark.slow
def test_tensorboard_event_file_matches_metrics_csv(e2e):
    ea = accumulator(e2e)
    m = rows(e2e)
    for key in ("val/acc", "val/loss", "train/loss", "lr"):
        got = [(e.step, e.value) for e in ea.Scalars(key)]
        assert [s for s, _ in got] == [int(r["epoch"]) for r in m] == [1, 2]
        assert [v for _, v in got] == pytest.approx([float(r[key]) for r in m], rel=1e-6)  # stored as float32
    # histograms every epoch (hist_every=1); the last one is the final weights, as in last.pt
    weights = torch.load(e2e / "checkpoints" / "last.pt", weights_only=True)["model"]
    tags = ea.Tags()["histograms"]
    assert tags and set(tags) <= set(weights)
    for tag in tags:
        events = ea.Histograms(tag)
        assert [e.step for e in events] == [1, 2]
        h, w = events[-1].histogram_value, weights[tag].float()
        assert h.num == w.numel() and h.min == pytest.approx(w.min().item()) and h.max == pytest.approx(w.max().item())
    (img,) = ea.Images("samples")  # make_grid of one batch: 32 images of 28x28, 8 a row, 2 px padding
    assert (img.width, img.height) == (8 * 30 + 2, 4 * 30 + 2)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(3e-4) and start.hparams["epochs"].number_value == 2
    s = json.loads((e2e / "summary.json").read_text())
    assert ea.Scalars("best/val/acc")[0].value == pytest.approx(s["best"]["val/acc"], rel=1e-6)


@pytest.mark.slow
def test_mlflow_store_matches_metrics_csv_and_config(e2e):
    client, runs = mlflow_runs(e2e.parents[2] / "mlruns")  # started in the folder that holds outputs/
    (r,) = runs
    assert r.info.status == "FINISHED" and r.info.run_name == str(e2e.relative_to(e2e.parents[2] / "outputs"))
    m = rows(e2e)
    for key in ("val/acc", "val/loss", "train/acc", "train/loss", "lr"):
        hist = client.get_metric_history(r.info.run_id, key)
        assert [(h.step, h.value) for h in sorted(hist, key=lambda h: h.step)] == \
            [(int(x["epoch"]), float(x[key])) for x in m]
    p = r.data.params
    assert p["optim.lr"] == "0.0003" and p["epochs"] == "2" and p["data.fraction"] == "0.2"
    config = OmegaConf.to_container(OmegaConf.load(e2e / ".hydra" / "config.yaml"), resolve=True)
    assert p == {k: str(v) for k, v in flatten(config).items()}  # every key of the run's own config
    assert {a.path for a in client.list_artifacts(r.info.run_id)} == {"summary.json", "curves.png", "metrics.csv"}
    local = client.download_artifacts(r.info.run_id, "summary.json", str(e2e.parent))
    assert Path(local).read_text() == (e2e / "summary.json").read_text()


@pytest.mark.slow
def test_mlflow_interrupted_then_resumed_with_other_loggers(make_cfg, tmp_path, sigterm_at):
    """KILLED on SIGTERM; resume=auto (with tensorboard added: loggers do not change the job) is a new
    MLflow run tagged resumed_from that carries epoch 1 too; metrics.csv is written without logger=csv."""
    store = tmp_path / "mlruns"
    over = ["epochs=2", "data.fraction=0.1", f"logger.mlflow.tracking_uri={store}"]  # 5 steps an epoch
    quiet = Reporter(live=False)
    quiet.console.quiet = True
    with sigterm_at(5 + 1 + 2), pytest.raises(runner.Interrupted):  # epoch 1: 5 steps + 1 check; 2 steps more
        runner.train(make_cfg("logger=mlflow", *over), tmp_path / "outputs" / "a", {}, quiet)
    runner.train(make_cfg("logger=[mlflow,tensorboard]", "resume=auto", *over), tmp_path / "outputs" / "b", {}, quiet)
    client, (first, second) = mlflow_runs(store)
    assert first.info.status == "KILLED" and second.info.status == "FINISHED"
    assert second.data.tags["resumed_from"] == str((tmp_path / "outputs" / "a").resolve())
    done = rows(tmp_path / "outputs" / "a")
    assert len(done) == 1  # stopped in epoch 2
    assert [h.value for h in client.get_metric_history(first.info.run_id, "val/acc")] == [float(done[0]["val/acc"])]
    m = rows(tmp_path / "outputs" / "b")
    assert len(m) == 2
    hist = sorted(client.get_metric_history(second.info.run_id, "val/acc"), key=lambda h: h.step)
    assert [(h.step, h.value) for h in hist] == [(int(x["epoch"]), float(x["val/acc"])) for x in m]
    ea = accumulator(tmp_path / "outputs" / "b")  # the resumed folder's event file holds both epochs too
    assert [e.value for e in ea.Scalars("val/acc")] == pytest.approx([float(x["val/acc"]) for x in m], rel=1e-6)


@pytest.mark.slow
def test_failed_run_is_failed_in_mlflow(make_cfg, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("validation broke")
    monkeypatch.setattr("dlrunner.engine.loop.score_split", boom)
    quiet = Reporter(live=False)
    quiet.console.quiet = True
    cfg = make_cfg("logger=[csv,mlflow]", "epochs=1", "data.fraction=0.1", f"logger.mlflow.tracking_uri={tmp_path / 'ml'}")
    with pytest.raises(RuntimeError, match="validation broke"):
        runner.train(cfg, tmp_path / "run", {}, quiet)
    _, (r,) = mlflow_runs(tmp_path / "ml")
    assert r.info.status == "FAILED"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("name,modules", [("tensorboard", ("tensorboard", "torch.utils.tensorboard")),
                                          ("mlflow", ("mlflow",))])
def test_missing_package_is_one_line_before_any_work(make_cfg, tmp_path, monkeypatch, name, modules):
    for mod in modules:
        monkeypatch.setitem(sys.modules, mod, None)  # `import mod` now fails as if it were not installed
    with pytest.raises(DlrunError) as e:
        runner.train(make_cfg(f"logger=[csv,{name}]", *RUN), tmp_path / "run", {}, Reporter(live=False))
    assert str(e.value) == f'logger={name} needs the {name} package: pip install "dlrunner[{name}]"'
    assert not (tmp_path / "run").exists()  # no data loaded, nothing written


def test_bad_hist_every_is_refused(make_cfg, tmp_path):
    with pytest.raises(DlrunError, match="hist_every must be >= 0"):
        runner.train(make_cfg("logger=tensorboard", "logger.tensorboard.hist_every=-1"), tmp_path / "run", {},
                     Reporter(live=False))
