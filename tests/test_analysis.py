"""Per-run error analysis: confusion matrix, per-class scores and top losses, checked against
independent computations (scikit-learn, a plain forward pass), and the files a run writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from dlrunner.reporting import analysis, plots

from dlrunner.engine import checkpoint

from dlrunner.modes import train as runner
from dlrunner.build import build_job
from dlrunner.reporting.console import Reporter
from dlrunner.engine.loop import TrainState
from dlrunner.modes.predict import rebuild

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real `dlrun epochs=2 data.fraction=0.2` (digits + LeNet) shared by the tests below."""
    cwd = tmp_path_factory.mktemp("analysis")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-m", "dlrunner", "epochs=2", "data.fraction=0.2"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = [p.parent for p in (cwd / "outputs").rglob("summary.json")]
    return {"dir": run_dir, "stdout": proc.stdout, "summary": json.loads((run_dir / "summary.json").read_text())}


@pytest.fixture(scope="module")
def job(run):
    """The run's job rebuilt with its final weights (the weights the analysis used: eval_test is off)."""
    return rebuild(checkpoint.load(run["dir"] / "checkpoints" / "last.pt"), "cpu", print)


def plain_logits(job) -> tuple[torch.Tensor, torch.Tensor]:
    job.model.eval()
    with torch.no_grad():
        return job.model(job.data.val.x), job.data.val.y


@pytest.mark.slow
def test_run_writes_plots_and_summary_entries(run):
    s, d = run["summary"], run["dir"]
    for name in ("confusion.png", "top_losses.png", "curves.png"):
        with Image.open(d / name) as img:
            assert img.format == "PNG" and min(img.size) > 200
    conf = s["confusion"]
    assert conf["split"] == "val" and conf["labels"] == s["data"]["classes"]
    m = np.array(conf["matrix"])
    assert m.shape == (10, 10) and m.sum() == s["data"]["val"]
    # the diagonal is the validation accuracy the run reported for its last epoch
    assert np.trace(m) / m.sum() == pytest.approx(s["final"]["val/acc"], abs=1e-9)
    assert set(s["per_class"]) == set(s["data"]["classes"])
    assert sum(v["support"] for v in s["per_class"].values()) == s["data"]["val"]
    assert "per class (val)" in run["stdout"] and "precision" in run["stdout"]


@pytest.mark.slow
def test_confusion_and_per_class_match_sklearn(run, job):
    logits, y = plain_logits(job)
    pred = logits.argmax(1).numpy()
    k = len(job.data.class_names)
    expected = confusion_matrix(y.numpy(), pred, labels=list(range(k)))
    assert np.array_equal(np.array(run["summary"]["confusion"]["matrix"]), expected)
    p, r, f1, support = precision_recall_fscore_support(y.numpy(), pred, labels=list(range(k)), zero_division=0)
    for i, name in enumerate(job.data.class_names):
        got = run["summary"]["per_class"][name]
        assert got["precision"] == pytest.approx(p[i]) and got["recall"] == pytest.approx(r[i])
        assert got["f1"] == pytest.approx(f1[i]) and got["support"] == support[i]


@pytest.mark.slow
def test_top_losses_are_the_highest_per_sample_losses(job):
    a = analysis.analyze(job, n=16)
    logits, y = plain_logits(job)
    losses = -torch.log_softmax(logits.double(), 1)[torch.arange(len(y)), y]  # computed here, not by F.cross_entropy
    probs = logits.double().softmax(1)
    assert len(a.top) == 16
    top_idx = [r["index"] for r in a.top]
    assert len(set(top_idx)) == 16
    assert [r["loss"] for r in a.top] == sorted((r["loss"] for r in a.top), reverse=True)
    assert np.allclose([r["loss"] for r in a.top], torch.sort(losses, descending=True).values[:16].numpy(), atol=1e-4)
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[top_idx] = False
    assert float(losses[rest].max()) <= min(r["loss"] for r in a.top) + 1e-5
    for r in a.top:
        i = r["index"]
        assert r["true"] == int(y[i]) and r["pred"] == int(probs[i].argmax())
        assert r["loss"] == pytest.approx(float(losses[i]), abs=1e-4)
        assert r["prob"] == pytest.approx(float(probs[i].max()), abs=1e-5)
        assert r["true_prob"] == pytest.approx(float(probs[i, y[i]]), abs=1e-5)


def test_scores_match_sklearn_with_absent_and_never_predicted_classes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)  # class 4 never occurs
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))  # class 3 never predicted
    m = analysis.confusion_matrix(torch.from_numpy(y), torch.from_numpy(pred), 5)
    assert np.array_equal(m.numpy(), confusion_matrix(y, pred, labels=range(5)))
    scores = analysis.per_class_scores(m, list("abcde"))
    p, r, f1, support = precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    got = np.array([[scores[c][k] for k in ("precision", "recall", "f1", "support")] for c in "abcde"])
    assert np.allclose(got, np.stack([p, r, f1, support], 1))


@pytest.mark.parametrize("overrides", [
    ("data.fraction=0.2",),
    ("data=mnist1d", "model=conv1d", "data.num_samples=400"),
    ("data=tabular", "model=mlp", "data.name=breast_cancer"),
])
def test_plots_for_every_modality(make_cfg, tmp_path, overrides):
    extra = (f"data.root={tmp_path / 'data'}",) if "data=mnist1d" in overrides else ()
    job = build_job(make_cfg("debug=smoke", *overrides, *extra), CPU, print)
    a, entries = analysis.report(job, tmp_path)
    n_val = len(job.data.val)
    assert int(a.matrix.sum()) == n_val and entries["confusion"]["matrix"] == a.matrix.tolist()
    for name in ("confusion.png", "top_losses.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and min(img.size) > 100
    # the pictures show the inputs before normalization: the values the pipeline produced
    idx = [r["index"] for r in a.top]
    raw = analysis.raw_inputs(job.data.val.x[idx], job.data.mean, job.data.std)
    if job.data.modality == "tabular":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        assert job.data.extra["features"] == list(d.feature_names)
        # every raw row is a row of the original data set (up to float32 rounding)
        dist = torch.cdist(raw.double(), torch.from_numpy(d.data)).min(1).values
        assert float(dist.max()) < 1e-2
    elif job.data.name == "digits":
        assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5


def test_top_losses_plot_draws_one_panel_per_sample(tmp_path):
    rows = [{"index": i, "true": i % 3, "pred": (i + 1) % 3, "prob": 0.5, "true_prob": 0.1, "loss": 2.3 - i / 10}
            for i in range(5)]
    pic = plots.top_losses(torch.rand(5, 1, 40), rows, ["a", "b", "c"], "sequence", tmp_path / "t.png")
    assert pic.titles == [f"{'abc'[i % 3]}/{'abc'[(i + 1) % 3]}/0.50/{2.3 - i / 10:.2f}" for i in range(5)]
    with Image.open(tmp_path / "t.png") as img:
        px = np.asarray(img.convert("RGB"))
    assert len(pic.boxes) == 5
    for left, top, right, bottom in pic.boxes:  # every panel holds its line: coloured pixels inside
        inside = px[top + 2:bottom - 2, left + 2:right - 2]
        assert ((inside[..., 2] > 100) & (inside[..., 0] < 100)).sum() > 20


def test_failed_analysis_warns_and_the_run_completes(make_cfg, tmp_path, monkeypatch, capsys):
    def broken(*a, **k):
        raise ValueError("no display\nsecond line")
    monkeypatch.setattr(plots, "confusion", broken)
    cfg = make_cfg("debug=smoke")
    job = build_job(cfg, CPU, print)
    runner.finish(cfg, job, TrainState(), tmp_path, 0.0, "completed", None, 1, Reporter(live=False))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and "confusion" not in summary
    out = capsys.readouterr().out
    warning = [line for line in out.splitlines() if "error analysis skipped" in line]
    assert warning == ["warning: error analysis skipped (ValueError: no display)"]
    monkeypatch.undo()  # and with working plots the same call writes the analysis
    runner.finish(cfg, job, TrainState(), tmp_path, 0.0, "completed", None, 1, Reporter(live=False))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sum(map(sum, summary["confusion"]["matrix"])) == len(job.data.val)


def test_many_classes_show_only_the_ten_worst(capsys):
    scores = {f"c{i:02d}": {"precision": 0.5, "recall": 0.5, "f1": i / 30, "support": 3} for i in range(25)}
    Reporter(live=False).per_class(scores)
    out = capsys.readouterr().out
    assert "10 worst of 25 classes" in out
    assert all(f"c{i:02d}" in out for i in range(10)) and not any(f"c{i:02d}" in out for i in range(10, 25))
