"""logger=wandb: offline W&B runs read back from W&B's own run file (tests/wandb_file.py)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlrunner.modes import train as runner
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.reporting.wandb_logger import logged_in, resolve_mode
from tests.wandb_file import offline_runs, read_run

pytest.importorskip("wandb")


def offline_env(home: Path) -> dict[str, str]:
    """No account: no API key, no ~/.netrc, no WANDB_MODE; the logger must choose offline by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}


@pytest.fixture
def no_account(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("WANDB_")] + ["NETRC"]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def quiet() -> Reporter:
    out = Reporter(live=False)
    out.console.quiet = True
    return out


def rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> Path:
    """One real `dlrun logger=[csv,wandb]` with no W&B account; returns the run folder."""
    cwd = tmp_path_factory.mktemp("wandb")
    (cwd / "home").mkdir()
    r = subprocess.run([sys.executable, "-m", "dlrunner", "logger=[csv,wandb]", "epochs=2", "data.fraction=0.2"],
                       cwd=cwd, env=offline_env(cwd / "home"), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    (run,) = [p.parent for p in (cwd / "outputs").rglob("summary.json")]
    return run


@pytest.mark.slow
def test_offline_run_holds_config_metrics_summary_and_pictures(e2e):
    (folder,) = offline_runs(e2e)  # offline: no account and no WANDB_MODE
    run = read_run(folder)
    assert json.loads((e2e / "wandb.json").read_text())["id"] == run.id and folder.name.endswith(run.id)
    assert run.name == str(e2e.relative_to(e2e.parents[2] / "outputs"))
    config = OmegaConf.to_container(OmegaConf.load(e2e / ".hydra" / "config.yaml"), resolve=True)
    assert run.config == json.loads(json.dumps(config))  # the whole resolved config, nested
    # step 0: the input grid; then one step per epoch, holding exactly metrics.csv's row
    assert [h["_step"] for h in run.history] == [0, 1, 2]
    assert run.history[0]["samples"]["_type"] == "image-file"
    m = rows(e2e)
    for h, row in zip(run.history[1:], m):
        assert h["_step"] == int(row["epoch"])
        assert {k: h[k] for k in row if k != "epoch"} == {k: float(v) for k, v in row.items() if k != "epoch"}
    last = run.history[-1]  # the pictures sit beside the last epoch
    assert all(last[k]["_type"] == "image-file" for k in ("curves", "confusion", "top_losses"))
    assert {Path(f).name.split("_")[0] for f in run.files if f.startswith("media/images/")} >= \
        {"samples", "curves", "confusion", "top"}
    s = json.loads((e2e / "summary.json").read_text())
    assert run.summary["status"] == "completed" and run.summary["best_epoch"] == s["best_epoch"]
    assert run.summary["best/val/acc"] == s["best"]["val/acc"] and run.summary["value"] == s["value"]
    assert run.exit_code == 0 and not run.preempting and not run.resume


@pytest.mark.slow
def test_interrupted_run_is_continued_under_the_same_id(make_cfg, tmp_path, sigterm_at, no_account):
    """SIGTERM: preempting, non-zero exit; resume=auto continues the same W&B run id with epoch 2 only."""
    over = ["epochs=2", "data.fraction=0.1"]  # 5 steps an epoch
    with sigterm_at(5 + 1 + 2), pytest.raises(runner.Interrupted):
        runner.train(make_cfg("logger=[csv,wandb]", *over), tmp_path / "outputs" / "a", {}, quiet())
    runner.train(make_cfg("logger=[csv,wandb]", "resume=auto", *over), tmp_path / "outputs" / "b", {}, quiet())
    (fa,), (fb,) = offline_runs(tmp_path / "outputs" / "a"), offline_runs(tmp_path / "outputs" / "b")
    first, second = read_run(fa), read_run(fb)
    assert first.preempting and first.exit_code != 0 and first.summary["status"] == "interrupted"
    assert second.id == first.id and second.resume and second.exit_code == 0
    a, b = rows(tmp_path / "outputs" / "a"), rows(tmp_path / "outputs" / "b")
    assert [h["_step"] for h in first.history] == [0, 1]
    assert first.history[1]["val/acc"] == float(a[0]["val/acc"])
    # the continuation logs what W&B does not have yet: epoch 2 (and the pictures), no second input grid
    assert [h["_step"] for h in second.history] == [2] and "samples" not in second.history[0]
    assert second.history[0]["val/acc"] == float(b[1]["val/acc"])


@pytest.mark.slow
def test_failed_run_fails_in_wandb_and_a_resumed_run_without_it_starts_a_new_one(make_cfg, tmp_path, monkeypatch,
                                                                                  no_account):
    def boom(*args, **kwargs):
        raise RuntimeError("validation broke")
    with monkeypatch.context() as m:
        m.setattr("dlrunner.engine.loop.score_split", boom)
        with pytest.raises(RuntimeError, match="validation broke"):
            runner.train(make_cfg("logger=[csv,wandb]", "epochs=1", "data.fraction=0.1"), tmp_path / "run", {}, quiet())
    (folder,) = offline_runs(tmp_path / "run")
    run = read_run(folder)
    assert run.exit_code == 1 and run.summary["status"] == "failed" and not run.preempting


@pytest.mark.slow
def test_resumed_from_a_run_without_wandb_replays_its_epochs(make_cfg, tmp_path, sigterm_at, no_account):
    over = ["epochs=2", "data.fraction=0.1"]
    with sigterm_at(5 + 1 + 2), pytest.raises(runner.Interrupted):
        runner.train(make_cfg("logger=csv", *over), tmp_path / "outputs" / "a", {}, quiet())
    runner.train(make_cfg("logger=[csv,wandb]", "resume=auto", *over), tmp_path / "outputs" / "b", {}, quiet())
    (folder,) = offline_runs(tmp_path / "outputs" / "b")
    run = read_run(folder)
    assert not run.resume and [h["_step"] for h in run.history] == [1, 2]  # epoch 1 from the folder's history
    b = rows(tmp_path / "outputs" / "b")
    assert [h["val/acc"] for h in run.history] == [float(r["val/acc"]) for r in b]


def test_missing_package_is_one_line_naming_the_extra(tmp_path):
    """The real console entry point with wandb hidden: one line on stderr, exit 2, nothing written."""
    code = ("import sys; sys.modules['wandb'] = None; sys.argv = ['dlrun', 'logger=[csv,wandb]']; "
            "from dlrunner.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=offline_env(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ['dlrun: error: logger=wandb needs the wandb package: '
                                             'pip install "dlrunner[wandb]"']
    assert not list((tmp_path / "outputs").rglob("metrics.csv"))


def test_mode_offline_unless_logged_in(tmp_path):
    netrc = tmp_path / "netrc"
    assert resolve_mode("auto", {"NETRC": str(netrc)}) == "offline"  # no file
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert logged_in({"NETRC": str(netrc)}) and resolve_mode("auto", {"NETRC": str(netrc)}) == "online"
    other = {"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"}  # a key for another host
    assert resolve_mode("auto", other) == "offline"
    assert resolve_mode("auto", {"NETRC": str(tmp_path / "no"), "WANDB_API_KEY": "k"}) == "online"
    assert resolve_mode("auto", {"NETRC": str(netrc), "WANDB_MODE": "offline"}) == "offline"  # the user's say
    assert resolve_mode("offline", {"WANDB_API_KEY": "k"}) == "offline"


def test_bad_mode_is_refused_before_any_work(make_cfg, tmp_path):
    with pytest.raises(DlrunError, match="logger.wandb.mode must be one of"):
        runner.train(make_cfg("logger=wandb", "logger.wandb.mode=cloud"), tmp_path / "run", {}, quiet())
    assert not (tmp_path / "run").exists()
