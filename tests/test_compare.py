"""Comparing runs: `dlrun mode=compare` and `dlrun-report` over a real multirun."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from dlrunner.modes import compare
from dlrunner.errors import DlrunError

PNG = b"\x89PNG\r\n\x1a\n"
LRS = ("3e-3", "3e-4")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}


def run(*args: str, cwd: Path, module: str = "dlrunner") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=240)


def report(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script, or the same entry point through -m where the package is not installed."""
    script = Path(sys.executable).parent / "dlrun-report"
    if script.exists():
        return subprocess.run([str(script), *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    return run(*args, cwd=cwd, module="dlrunner.modes.compare")


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """One real multirun of two jobs; the folder it was started in."""
    cwd = tmp_path_factory.mktemp("sweep")
    r = run("-m", "epochs=2", "data.fraction=0.1", f"optim.lr={','.join(LRS)}", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd


def jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in (sweep / "outputs" / "multirun").rglob("summary.json"))


def quiet() -> Console:
    return Console(file=io.StringIO(), width=300)


@pytest.mark.slow
def test_mode_compare_lists_every_job_with_its_summary_values(sweep):
    r = run("mode=compare", "csv=export.csv", cwd=sweep)
    assert r.returncode == 0, r.stderr
    (own,) = [p.parent for p in (sweep / "outputs").rglob("compare.csv")]
    assert (own / "compare.png").read_bytes()[:8] == PNG
    rows = read_csv(own / "compare.csv")
    assert read_csv(sweep / "export.csv") == rows
    assert len(rows) == len(LRS) == len(jobs(sweep))
    assert sorted(Path(row["path"]) for row in rows) == [j.resolve() for j in jobs(sweep)]  # not the compare run
    for row in rows:
        s = json.loads((Path(row["path"]) / "summary.json").read_text())
        assert float(row["value"]) == s["value"] and int(row["best_epoch"]) == s["best_epoch"]
        assert int(row["epochs_run"]) == s["epochs_run"] == 2 and row["status"] == s["status"] == "completed"
        for m in ("val/acc", "val/loss", "train/acc", "train/loss"):
            assert float(row[f"best/{m}"]) == s["best"][m] and float(row[f"final/{m}"]) == s["final"][m]
        assert float(row["wall_time"]) == s["wall_time"] and row["fit"] == s["fit"]["verdict"]
        over = yaml.safe_load((Path(row["path"]) / ".hydra" / "overrides.yaml").read_text())
        assert f"optim.lr={row['optim.lr']}" in over
        assert row["epochs"] == "2" and row["data.fraction"] == "0.1"  # the CSV keeps the common ones too
    values = [float(row["value"]) for row in rows]
    assert values == sorted(values, reverse=True)  # default: the optimized metric (val/acc), best first
    assert "common: epochs=2 data.fraction=0.1" in r.stdout
    header = next(line for line in r.stdout.splitlines() if "run" in line and "status" in line)
    assert "optim.lr" in header and "data.fraction" not in header and "epochs=" not in header


@pytest.mark.slow
def test_differing_overrides_sort_and_unfinished_runs(sweep, tmp_path):
    root = sweep / "outputs" / "multirun"
    runs = [compare.load_run(p, root) for p in compare.find_runs(root)]
    assert compare.split_overrides(runs) == ({"epochs": "2", "data.fraction": "0.1"}, ["optim.lr"])
    by_lr = compare.compare(root, sort="optim.lr", console=quiet())
    assert [float(r["optim.lr"]) for r in by_lr] == sorted(float(x) for x in LRS)
    by_loss = compare.compare(root, sort="val/loss", console=quiet())  # a loss: lowest first
    assert [r["best/val/loss"] for r in by_loss] == sorted(r.best["val/loss"] for r in runs)
    with pytest.raises(DlrunError, match="sort=nope: not a column"):
        compare.compare(root, sort="nope", console=quiet())
    # a run killed before its summary: .hydra/ + metrics.csv; a folder with only .hydra/ is not a run
    killed = tmp_path / "runs" / "killed"
    shutil.copytree(jobs(sweep)[0], killed)
    (killed / "summary.json").unlink()
    (tmp_path / "runs" / "compare-run" / ".hydra").mkdir(parents=True)
    (row,) = compare.compare(tmp_path / "runs", console=quiet())
    hist = read_csv(killed / "metrics.csv")
    assert row["status"] == "unfinished" and row["epochs_run"] == len(hist) == 2
    assert row["value"] == max(float(h["val/acc"]) for h in hist)
    assert row["final/val/loss"] == float(hist[-1]["val/loss"])


@pytest.mark.slow
def test_dlrun_report_writes_table_csv_and_plot(sweep, tmp_path):
    r = report(str(sweep / "outputs"), "--sort", "final/train/loss", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_csv(tmp_path / "compare.csv")  # the current folder by default
    assert (tmp_path / "compare.png").read_bytes()[:8] == PNG
    assert len(rows) == len(LRS)  # the mode=compare run folders under outputs/ are not runs
    losses = [float(x["final/train/loss"]) for x in rows]
    assert losses == sorted(losses)
    for x in rows:
        assert x["run"] in r.stdout
    out = tmp_path / "out"
    assert compare.main([str(sweep / "outputs" / "multirun"), "--csv", str(out / "t.csv"), "--plot",
                         str(out / "c.png")]) == 0
    by_path = lambda f: {x["path"]: x["value"] for x in read_csv(f)}  # noqa: E731
    assert by_path(out / "t.csv") == by_path(tmp_path / "compare.csv")  # same runs and values, other folder
    assert (out / "c.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_no_runs_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DlrunError, match=f"^no runs found under {tmp_path / 'empty'}$"):
        compare.compare(tmp_path / "empty", console=quiet())
    r = report("empty", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "dlrun-report: error: no runs found under empty"
    r = report("missing", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "dlrun-report: error: missing: no such folder"
    assert not (tmp_path / "compare.csv").exists()
    r = run("mode=compare", cwd=tmp_path)  # outputs/ holds only the compare run's own folder
    assert r.returncode == 2 and r.stderr.strip() == "dlrun: error: no runs found under outputs"
