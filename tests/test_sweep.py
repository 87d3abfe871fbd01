"""`dlrun -m sweep=importance`: the hydra_plugins sweeper on a known objective (stage order, carried
incumbents, failures, resume) and one small real sweep on digits."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlrunner.errors import DlrunError
from dlrunner.sweep import Param, propose, read_space, split_budget

APP = Path(__file__).resolve().parent / "sweep_objective_app.py"
FAST = ["sweep=importance", "sweep.budget=20", "sweep.space.model.depth=[1,2,3]"]


def run_app(tmp_path: Path, *args: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SWEEP_CALLS": str(tmp_path / "calls.txt"), "HYDRA_FULL_ERROR": "1"}
    env.pop("SWEEP_KILL_AT", None)
    if kill_at:
        env["SWEEP_KILL_AT"] = str(kill_at)
    if not any(a.startswith("sweep.halving=") for a in args):  # the plan on whole runs; halving has its own tests
        args = (*args, "sweep.halving=1")
    if not any(a.startswith("sweep.rank_by=") for a in args):  # the objective read as an accuracy (test below: auto)
        args = (*args, "sweep.rank_by=val/acc")
    return subprocess.run([sys.executable, str(APP), "-m", *args, f"hydra.sweep.dir={tmp_path / 'sw'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def rows(tmp_path: Path) -> list[dict]:
    with (tmp_path / "sw" / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def values(row: dict) -> dict:
    return dict(kv.split("=", 1) for kv in row["overrides"].split())


def calls(tmp_path: Path) -> int:
    return len((tmp_path / "calls.txt").read_text().splitlines())


def test_space_parsing_and_proposals():
    space = read_space({"optim": {"lr": [1e-4, 1e-2]}, "model": {"width": [4, 32], "act": ["relu", "gelu"]}},
                       {"schedule": ["constant", "cosine"]})
    assert space["optim.lr"].kind == "log" and not space["optim.lr"].integer
    assert space["model.width"].integer and space["model.act"].kind == "choice"
    pts = propose([space["optim.lr"], space["schedule"]], 8, seed=0)
    lrs = sorted(p["optim.lr"] for p in pts)
    assert all(1e-4 <= v <= 1e-2 for v in lrs)
    # log scale: a quasi-random set covers every decade of the range evenly
    assert sum(v < 1e-3 for v in lrs) == 4
    assert [p["schedule"] for p in pts].count("cosine") == 4  # grid: every choice equally often
    # ... and over the whole range: not tied to the half of the lr range the Sobol points alternate in
    for seed in range(4):
        pts = propose([space["optim.lr"], space["schedule"]], 8, seed=seed)
        assert sum(p["optim.lr"] < 1e-3 and p["schedule"] == "cosine" for p in pts) == 2
    assert split_budget(19, [0.5, 0.3, 0.2]) == [9, 6, 4]  # 9.5, 5.7, 3.8: largest remainders
    # {times: [lo, hi]}: one range for every rung, made absolute around the model's own value
    rel = read_space({"model": {"width": {"times": [0.5, 4]}}}, {})["model.width"]
    assert rel.relative and (rel.around(6).low, rel.around(6).high, rel.around(6).integer) == (3, 24, True)
    assert (rel.around(128).low, rel.around(128).high) == (64, 512)
    assert rel.around(0.1).low == 0.05 and not rel.around(0.1).integer
    with pytest.raises(DlrunError, match="two factors"):
        read_space({"model": {"width": {"times": [4, 0.5]}}}, {})


def test_stages_revisit_earlier_keys_failures_pick_and_resume(tmp_path):
    res = run_app(tmp_path, *FAST)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = rows(tmp_path)
    assert len(trials) == 20 == calls(tmp_path) + sum(1 for t in trials if t["status"] == "failed" and not t["run_dir"])
    # stages in order: the baseline, the tiers, the refinement, the second-seed confirmation
    order = [t["stage"] for t in trials]
    assert order == sorted(order, key=["baseline", "tier1", "tier2", "tier3", "refine", "confirm"].index)
    assert {"tier1", "tier2", "tier3", "refine", "confirm"} <= set(order)
    # tier1 (the guides' prior) moves only its own keys; later stages move tier1's keys again
    tier1_keys = {"optim.lr", "schedule", "loss", "model.width"}
    assert all(set(values(t)) <= tier1_keys for t in trials if t["stage"] == "tier1")
    later = [values(t) for t in trials if t["stage"] in ("tier2", "tier3", "refine")]
    assert len({v["optim.lr"] for v in later}) >= 4 and len({v["model.width"] for v in later}) >= 2
    assert any("model.init" in v for v in later) and any("model.act" in v for v in later)
    # the crashing trials are recorded with their error and the sweep went on to the end
    failed = [t for t in trials if t["status"] == "failed"]
    assert all(values(t)["model.depth"] == "3" for t in failed)
    assert all("out of memory" in t["error"] for t in failed)
    # the pick: the best 2-seed mean of the sweep.confirm=2 best points, each re-run with seed 1
    search = [t for t in trials if t["status"] == "completed" and t["seed"] == "0"]
    top = sorted(search, key=lambda t: -float(t["metric"]))
    confirm = [t for t in trials if t["stage"] == "confirm"]
    assert [t["seed"] for t in confirm] == ["1", "1"]
    assert [t["overrides"] for t in confirm] == [t["overrides"] for t in top[:2]]
    # ... on another train/val split of the same data (sweep.resplit): the searches' split's luck is not shared
    assert [t["launch"] for t in confirm] == ["data.val_seed=1"] * 2
    calls_ = [line.split() for line in (tmp_path / "calls.txt").read_text().splitlines()]
    assert sorted(c[3] for c in calls_ if c[0] == "1") == ["1", "1"] and {c[3] for c in calls_ if c[0] == "0"} == {"None"}
    means = {c["overrides"]: (float(c["metric"]) + float(t["metric"])) / 2 for c, t in zip(confirm, top)}
    imp = json.loads((tmp_path / "sw" / "importance.json").read_text())
    best = imp["best"]
    assert best["seeds"] == [0, 1] and math.isclose(best["metric"], max(means.values()), rel_tol=1e-5)
    assert best["values"]["schedule"] == "cosine"  # the objective's best schedule
    assert imp["failed"] == len(failed) and imp["params"]["schedule"]["tier"] == 1
    # importance measured over all trials: the schedule (0.05 of the metric) outweighs the dropout (none)
    assert imp["measured"]["schedule"] > imp["measured"].get("model.dropout", 0.0)
    assert (tmp_path / "sw" / "importance.png").exists()
    best_yaml = (tmp_path / "sw" / "best.yaml").read_text()
    assert "override /schedule: cosine" in best_yaml
    # the documented re-run command composes exactly the winner
    command = next(line for line in best_yaml.splitlines() if line.startswith("# re-run: dlrun "))
    args = command.removeprefix("# re-run: dlrun ").split()
    # the console prints it on one line too (a log is not cut to a terminal's width), to copy as it is
    assert "re-run it: " + command.removeprefix("# re-run: ") in res.stdout.splitlines()
    cfg = subprocess.run([sys.executable, "-m", "dlrunner", *args, "--cfg", "job"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert cfg.returncode == 0, cfg.stderr
    job = yaml.safe_load(cfg.stdout)
    assert job["schedule"]["_target_"].endswith("cosine")
    assert math.isclose(job["optim"]["lr"], float(best["values"]["optim.lr"]))
    assert job["model"]["width"] == int(best["values"]["model.width"])
    # the same command on the same sweep dir runs nothing again
    before = calls(tmp_path)
    again = run_app(tmp_path, *FAST)
    assert again.returncode == 0, again.stderr[-3000:]
    assert calls(tmp_path) == before and len(rows(tmp_path)) == 20
    assert "resuming" in again.stdout
    # the same folder with another job (other trials' results would not apply) is refused
    other = run_app(tmp_path, *FAST, "epochs=3")
    assert other.returncode == 2 and "holds a sweep of other job overrides" in other.stderr
    assert calls(tmp_path) == before


def test_equal_metrics_are_ranked_by_validation_loss(tmp_path):
    """An accuracy on a few hundred validation samples ties often: among equal ones the lower
    val/loss at the run's best epoch ranks first (what the confirmation re-runs and the incumbent
    follow); a run without one ranks after those with one; a loss metric is ranked by itself."""
    from dlrunner.sweep import Trial
    from hydra_plugins.dlrun_importance_sweeper.importance_sweeper import ImportanceSweeper

    def trial(i: int, metric: float, loss: float | None) -> Trial:
        d = tmp_path / str(i)
        d.mkdir()
        if loss is not None:
            (d / "summary.json").write_text(json.dumps({"best": {"val/acc": metric, "val/loss": loss}}))
        return Trial("tier1", 1, 0, {"model.width": str(8 + i)}, i, metric, 1.0, "completed", "", str(d))

    s = ImportanceSweeper()
    s.lower, s.seeds, s._losses = False, [0, 1], {}
    s.trials = [trial(0, 0.98, 0.01), trial(1, 0.985, 0.09), trial(2, 0.985, 0.04), trial(3, 0.985, None),
                trial(4, 0.99, 0.2)]
    assert [t.trial for t in s._ranked()] == [4, 2, 1, 3, 0]
    assert s._best(s.trials[:4]).trial == 2
    s.lower, s._losses = True, {}  # val/loss optimized: the metric alone, lowest first
    assert [t.trial for t in s._ranked()] == [0, 1, 2, 3, 4]


def test_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    small = ["sweep=importance", "sweep.budget=12", "sweep.seeds=[0]"]
    # tier1 is trials 1-4 (one batch), tier2's first batch 5-6: the kill lands in the middle of it
    res = run_app(tmp_path, *small, kill_at=7)
    assert res.returncode != 0
    done = rows(tmp_path)
    assert 0 < len(done) < 12
    first = calls(tmp_path)
    res = run_app(tmp_path, *small)
    assert res.returncode == 0, res.stderr[-3000:]
    final = rows(tmp_path)
    assert [t["overrides"] for t in final[: len(done)]] == [t["overrides"] for t in done]
    # every call that finished before the kill (in trials.csv or only in its run folder) is reused:
    # only the killed trial and the ones never started run now
    launched = sum(1 for t in final if t["run_dir"])
    assert calls(tmp_path) - first == launched - (first - 1)


def test_joblib_launcher_runs_the_same_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    small = ["sweep=importance", "sweep.budget=8", "sweep.halving=3", "epochs=9"]  # short runs continued in other processes too
    basic = tmp_path / "basic"
    joblib = tmp_path / "joblib"
    basic.mkdir(), joblib.mkdir()
    assert run_app(basic, *small).returncode == 0
    res = run_app(joblib, *small, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert res.returncode == 0, res.stderr[-3000:]
    same = ["stage", "round", "seed", "overrides", "metric", "status"]
    assert [[t[k] for k in same] for t in rows(basic)] == [[t[k] for k in same] for t in rows(joblib)]
    assert {Path(t["run_dir"]).parent for t in rows(joblib)} == {joblib / "sw"}
    # 8 whole-run equivalents: short runs (3 of 9 epochs) and the best of them continued (round 4)
    assert 8 < len(rows(joblib)) <= 20 and "4" in {t["round"] for t in rows(joblib)}


def test_bad_sweep_settings_are_one_line_before_any_trial(tmp_path):
    for bad, says in [("sweep.space.optim.lr=[0,1]", "log-scale range needs low > 0"),
                      ("sweep.tiers=[[optim.nope]]", "sweep.tiers name ['optim.nope']"),
                      ("optim.lr=1e-3,1e-2", "not a Hydra sweep list"),
                      ("sweep.budget=2", "leaves no trial after the baseline"),
                      ("sweep.shares=[1.0]", "sweep.shares has 1 entries for 3 tiers and the refinement"),
                      ("sweep.method=grid", "sweep.method=grid: importance | random | tpe"),
                      ("sweep.time_budget=soon", "give seconds or a duration such as 30m"),
                      ("sweep.order=nowhere", "sweep.order=nowhere: cannot read an importance.json"),
                      ("sweep.promote=0", "sweep.promote must be in (0, 1]"),
                      ("sweep.budget=lots", "give trials (24), epochs in all (240ep) or auto")]:
        res = run_app(tmp_path, "sweep=importance", bad)
        assert res.returncode == 2
        assert res.stderr.strip().splitlines()[-1].startswith("dlrun: error:") and says in res.stderr
        assert not (tmp_path / "calls.txt").exists()


def test_failure_budget_stops_the_sweep(tmp_path):
    res = run_app(tmp_path, *FAST, "sweep.max_failures=1", "sweep.space.model.depth=[3,4,5]",
                  "sweep.tiers=[[model.depth],[optim.lr]]", "sweep.shares=[0.5,0.3,0.2]")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = rows(tmp_path)
    # the first stage (one launch: depths 3, 4, 5 and the config's own 2) has 3 crashes; nothing after
    assert sorted(values(t)["model.depth"] for t in trials if t["stage"] == "tier1") == ["2", "3", "4", "5"]
    assert [t["stage"] for t in trials] == ["baseline"] + ["tier1"] * 4
    assert sum(t["status"] == "failed" for t in trials) == 3
    assert "max_failures=1" in json.loads((tmp_path / "sw" / "importance.json").read_text())["stopped"]


@pytest.mark.slow
def test_real_sweep_on_digits(dlrun, tmp_path):
    dlrun.env["OMP_NUM_THREADS"] = "2"
    res = dlrun("-m", "sweep=importance", "sweep.budget=3", "sweep.seeds=[0]", "epochs=1", "data.fraction=0.2",
                "sweep.tiers=[[optim.lr],[model.act]]", "sweep.shares=[0.5,0.5,0.0]", "sweep.threads_per_trial=1",
                f"hydra.sweep.dir={tmp_path / 'sw'}")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = rows(tmp_path)
    assert [t["stage"] for t in trials] == ["baseline", "tier1", "tier2"]
    assert "optim.lr=" in trials[1]["overrides"] and "model.act=" in trials[2]["overrides"]
    for t in trials:  # the metric recorded is the one each run wrote to its summary.json
        summary = json.loads((Path(t["run_dir"]) / "summary.json").read_text())
        assert math.isclose(float(t["metric"]), summary["value"], rel_tol=1e-5)
        assert summary["threads"] == 1  # sweep.threads_per_trial, not the 2 the process would have
    imp = json.loads((tmp_path / "sw" / "importance.json").read_text())
    assert imp["optimized_metric"] == "val/loss"  # an accuracy job, ranked by its validation loss (rank_by=auto)
    assert imp["best"]["metric"] <= float(trials[0]["metric"])
    assert (tmp_path / "sw" / "importance.png").exists()


def test_a_key_given_on_the_command_line_is_fixed(tmp_path):
    res = run_app(tmp_path, "sweep=importance", "sweep.budget=8", "model.width=16", "optim.lr=0.003", "seed=5",
                  "data.val_seed=2")
    assert res.returncode == 0, res.stderr[-3000:]
    trials = rows(tmp_path)
    assert len(trials) > 2 and not any("model.width" in t["overrides"] or "optim.lr" in t["overrides"] for t in trials)
    calls_ = [line.split() for line in (tmp_path / "calls.txt").read_text().splitlines()]
    assert {tuple(c[1:]) for c in calls_} == {("0.003", "16", "2")}  # every trial ran with the user's values
    assert {t["launch"] for t in trials} == {""}  # the user's validation split: the re-runs keep it too
    # seed=5 is the searches' seed; the second of sweep.seeds=[0,1] confirms
    assert {t["seed"] for t in trials if t["round"] != "3"} == {"5"}
    assert [t["seed"] for t in trials if t["round"] == "3"] == ["0", "0"]
    assert {c[0] for c in calls_} == {"5", "0"} and "searches use seed 5, confirmations seed 0" in res.stdout


def test_a_failing_baseline_stops_with_one_line(tmp_path):
    res = run_app(tmp_path, "sweep=importance", "model.depth=3")
    assert res.returncode == 2 and calls(tmp_path) == 1  # the baseline, nothing after
    assert res.stderr.strip().splitlines()[-1].startswith("dlrun: error: the baseline")
    assert "out of memory" in res.stderr and [t["status"] for t in rows(tmp_path)] == ["failed"]


SMALL = ["sweep=importance", "sweep.budget=10", "sweep.space.model.depth=[1,2,3]",
         "sweep.tiers=[[model.depth],[optim.lr]]", "sweep.shares=[0.5,0.3,0.2]"]


@pytest.fixture(scope="module")
def basic(tmp_path_factory) -> Path:
    """The small sweep of the launcher tests (a tier with crashing trials included), basic launcher."""
    d = tmp_path_factory.mktemp("basic")
    assert run_app(d, *SMALL).returncode == 0
    return d


def _same_trials_as_basic(basic: Path, tmp_path: Path, *launcher: str) -> subprocess.CompletedProcess:
    """Run the small sweep with `launcher`: it must record the basic launcher's trials, failures included."""
    other = tmp_path / "other"
    other.mkdir()
    res = run_app(other, *SMALL, *launcher)
    assert res.returncode == 0, res.stderr[-3000:]
    same = ["stage", "round", "seed", "overrides", "metric", "status"]
    assert [[t[k] for k in same] for t in rows(basic)] == [[t[k] for k in same] for t in rows(other)]
    assert "failed" in {t["status"] for t in rows(other)}  # a crashing trial is recorded, the sweep goes on
    assert {Path(t["run_dir"]).parent for t in rows(other) if t["run_dir"]} == {other / "sw"}
    return res


def test_ray_launcher_on_local_ray_runs_the_same_trials(basic, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    res = _same_trials_as_basic(basic, tmp_path, "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                                "+hydra.launcher.ray.init.include_dashboard=false")
    assert "Ray Launcher is launching" in res.stdout + res.stderr


def test_submitit_launcher_runs_the_same_trials(basic, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    res = _same_trials_as_basic(basic, tmp_path, "hydra/launcher=submitit_local")
    assert "Submitit 'local' sweep output dir" in res.stdout + res.stderr


def test_ray_trials_ask_for_a_gpu_when_told(monkeypatch):
    from omegaconf import OmegaConf

    from hydra_plugins.dlrun_importance_sweeper.importance_sweeper import _gpus_per_ray_trial

    def config(gpus, remote):
        return OmegaConf.create({"sweep": {"gpus_per_trial": gpus}, "hydra": {"launcher": {
            "_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", "ray": {"remote": remote}}}})

    cfg = config(1, {})
    _gpus_per_ray_trial(cfg)
    assert cfg.hydra.launcher.ray.remote.num_gpus == 1
    cfg = config(1, {"num_gpus": 0.5})  # the launcher's own setting wins
    _gpus_per_ray_trial(cfg)
    assert cfg.hydra.launcher.ray.remote.num_gpus == 0.5
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = config("auto", {})
    _gpus_per_ray_trial(cfg)
    assert "num_gpus" not in cfg.hydra.launcher.ray.remote
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    _gpus_per_ray_trial(cfg)
    assert cfg.hydra.launcher.ray.remote.num_gpus == 1


@pytest.mark.slow
def test_a_sweep_killed_at_random_moments_counts_every_trial_once(tmp_path):
    """The sweep process itself killed (SIGKILL or SIGTERM) at seeded random moments - between trials,
    inside one, while trials.csv is written - and rerun each time: it ends with the trials of a sweep
    never interrupted, each in trials.csv once."""
    import random
    import signal
    import time

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    assert run_app(straight, *FAST).returncode == 0
    rng = random.Random(15)
    calls = killed / "calls.txt"
    env = {**os.environ, "SWEEP_CALLS": str(calls), "HYDRA_FULL_ERROR": "1"}
    env.pop("SWEEP_KILL_AT", None)
    cmd = [sys.executable, str(APP), "-m", *FAST, "sweep.halving=1", "sweep.rank_by=val/acc", f"hydra.sweep.dir={killed / 'sw'}"]
    n_calls = lambda: len(calls.read_text().splitlines()) if calls.exists() else 0  # noqa: E731
    kills = 0
    for _ in range(8):
        proc = subprocess.Popen(cmd, cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # kill once the sweep has started 1-5 more trials, then a random moment later (inside a
        # trial, between two, or while trials.csv is written): progress, not the clock, whatever the load
        target, pause = n_calls() + rng.randint(1, 5), rng.uniform(0, 0.3)
        while proc.poll() is None and n_calls() < target:
            time.sleep(0.01)
        time.sleep(pause)
        if proc.poll() is None:
            proc.send_signal(rng.choice([signal.SIGKILL, signal.SIGTERM]))
            kills += 1
        if proc.wait(timeout=120) == 0:
            break
    else:
        assert run_app(killed, *FAST).returncode == 0
    assert kills >= 2  # the sweep was really interrupted, more than once
    same = ["stage", "round", "seed", "overrides", "metric", "status"]
    got = [tuple(t[k] for k in same) for t in rows(killed)]
    assert got == [tuple(t[k] for k in same) for t in rows(straight)]
    assert len(set(got)) == len(got)  # every trial once


def test_an_accuracy_job_is_ranked_by_its_validation_loss(tmp_path):
    """sweep.rank_by=auto (the default): a job that optimizes val/acc has every trial optimize val/loss,
    and the sweep ranks, promotes and picks the lowest; the pick is the same point as the accuracy's
    (the app's loss is 1 - its accuracy), best.yaml's re-run keeps the job's own metric, and the folder
    does not resume as a sweep ranked by accuracy (its metrics are losses)."""
    args = ["sweep=importance", "sweep.budget=10", "sweep.space.model.depth=[1,2,3]"]
    for d in ("acc", "auto", "bad"):
        (tmp_path / d).mkdir()
    acc = run_app(tmp_path / "acc", *args)  # (run_app: sweep.rank_by=val/acc unless given)
    auto = run_app(tmp_path / "auto", *args, "sweep.rank_by=auto")
    assert acc.returncode == 0 and auto.returncode == 0, auto.stderr[-3000:]
    by_acc, by_loss = rows(tmp_path / "acc"), rows(tmp_path / "auto")
    assert [t["overrides"] for t in by_loss] == [t["overrides"] for t in by_acc]  # the same decisions, loss = 1 - acc
    for a, b in zip(by_acc, by_loss):
        if a["metric"] not in ("", "nan"):
            assert math.isclose(float(b["metric"]), 1 - float(a["metric"]), abs_tol=1e-6)
            overrides = yaml.safe_load((Path(b["run_dir"]) / ".hydra" / "overrides.yaml").read_text())
            assert "optimized_metric=val/loss" in overrides
    imp = json.loads((tmp_path / "auto" / "sw" / "importance.json").read_text())
    assert imp["optimized_metric"] == "val/loss"
    assert imp["best"]["values"] == json.loads((tmp_path / "acc" / "sw" / "importance.json").read_text())["best"]["values"]
    best = (tmp_path / "auto" / "sw" / "best.yaml").read_text()
    assert "val/loss" in best and "optimized_metric=val/loss" not in best
    again = run_app(tmp_path / "auto", *args, "sweep.rank_by=val/acc")
    last = again.stderr.strip().splitlines()[-1]
    assert again.returncode == 2 and "optimized_metric=val/loss" in last and last.endswith(
        "give another hydra.sweep.dir, or sweep.rank_by=val/loss (the metric it ranked by)")
    again = run_app(tmp_path / "acc", *args, "sweep.rank_by=auto")  # and the other way round
    assert again.returncode == 2 and again.stderr.strip().endswith("or sweep.rank_by=val/acc (the metric it ranked by)")
    bad = run_app(tmp_path / "bad", *args, "sweep.rank_by=acc")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "dlrun: error: sweep.rank_by must be auto or one of val/acc, val/loss, train/acc, train/loss; got 'acc'")
    assert not (tmp_path / "bad" / "calls.txt").exists()
