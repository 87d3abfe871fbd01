"""A run is complete or resumable at every instant: killed (SIGTERM or SIGKILL) at seeded random
moments - while building, mid-epoch, while writing a checkpoint, during the end-of-run work - and
continued each time with `resume=auto`, it ends with a complete folder and the metrics of a run
that was never interrupted."""
from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time

import pytest

ARGS = ["debug=smoke", "epochs=6", "data.batch_size=8", "seed=4", "checkpoint_interval=0"]
COMPLETE = ("metrics.csv", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt", "curves.png",
            "samples.png", "confusion.png", "top_losses.png")


def metrics(run) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigterm_then_random_kills_then_resume_auto_match_an_uninterrupted_run(dlrun, tmp_path):
    t0 = time.perf_counter()
    straight = dlrun(*ARGS, "out_dir=straight")
    wall = time.perf_counter() - t0
    assert straight.returncode == 0, straight.stderr
    (base,) = [p.parent for p in (tmp_path / "straight").rglob("summary.json")]
    run_s = json.loads((base / "summary.json").read_text())["timings"]["total"]  # build, epochs, the end
    start_s = max(0.0, wall - run_s)  # the interpreter, imports, Hydra

    # SIGTERM once training is under way: a checkpoint is saved, said so, the run marked interrupted
    proc = subprocess.Popen([sys.executable, "-m", "dlrunner", *ARGS], cwd=tmp_path, env=dlrun.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 1/"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "checkpoint saved" in out and "Traceback" not in err
    (first,) = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    assert json.loads((first / "summary.json").read_text())["status"] == "interrupted"

    # then killed at seeded random moments, continued each time with resume=auto
    rng = random.Random(20261130)
    outcomes = []
    for _ in range(8):
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        # a quarter of the kills during start-up, the rest a little way into what is left of the run,
        # so that the kill points walk through the build, the epochs, checkpoint writes and the end
        delay = rng.uniform(0, start_s) if rng.random() < 0.25 else start_s + rng.uniform(0, 0.3 * run_s)
        proc = subprocess.Popen([sys.executable, "-m", "dlrunner", *ARGS, "resume=auto"], cwd=tmp_path,
                                env=dlrun.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=240)
        outcomes.append(proc.returncode)
        assert "Traceback" not in err, err
        if proc.returncode == 0:  # it finished before the kill: nothing left to resume
            break
    if outcomes[-1] != 0:
        final = dlrun(*ARGS, "resume=auto")
        assert final.returncode == 0, final.stderr
        assert "resumed from" in final.stdout
    done = [p.parent for p in (tmp_path / "outputs").rglob("summary.json")
            if json.loads(p.read_text())["status"] == "completed"]
    assert len(done) == 1, outcomes  # one run, continued across the kills, completed once
    run = done[0]
    assert run != first  # a new folder: the interrupted run is left as it was
    assert json.loads((first / "summary.json").read_text())["status"] == "interrupted"
    for f in COMPLETE:
        assert (run / f).is_file(), (f, outcomes)
    assert metrics(run) == metrics(base), outcomes
    assert set(outcomes) <= {0, -signal.SIGKILL, 128 + signal.SIGTERM, -signal.SIGTERM}, outcomes
    again = dlrun(*ARGS, "resume=auto")  # nothing left to resume: starts fresh, says so
    assert "no unfinished run" in again.stdout
