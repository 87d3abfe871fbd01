"""Data-parallel training (trainer.devices=N, torchrun) on the CPU with gloo and 2 processes.

The end-to-end tests share one configuration: the global batch is data.batch_size in both the
1- and the 2-process run, so both take the same optimizer steps on the same samples and their
metrics agree up to float summation order."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlrunner.data.batches import TensorBatches
from dlrunner.data.core import Split
from dlrunner.engine.distributed import ShardedBatches, World
from dlrunner.errors import DlrunError
from dlrunner.validate import validate

JOB = ("data=digits", "data.fraction=0.5", "model=lenet", "epochs=3", "device=cpu", "checkpoint_interval=0", "seed=3")
COLUMNS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr")


def read_metrics(run: Path) -> list[dict[str, float]]:
    with (run / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def assert_same_metrics(a: list[dict], b: list[dict], rel: float = 1e-5) -> None:
    """Same epochs, same values up to float summation order (DDP averages two half-batch
    gradients where one process takes the mean of the whole batch): measured ~1e-8 relative."""
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for k in COLUMNS:
            assert ra[k] == pytest.approx(rb[k], rel=rel, abs=1e-7), (ra["epoch"], k, ra[k], rb[k])


# ---- sharding: fast, no processes ----

@pytest.mark.parametrize("world_size,n,batch", [(2, 101, 16), (3, 50, 7), (2, 64, 32)])
def test_shards_split_every_batch_and_cover_each_sample_once(world_size, n, batch):
    split = Split(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))
    single = TensorBatches(split, batch, shuffle=True, seed=5, device=torch.device("cpu"))
    shards = [ShardedBatches(TensorBatches(split, batch, shuffle=True, seed=5, device=torch.device("cpu")),
                             World(r, world_size)) for r in range(world_size)]
    for epoch in (0, 1):
        whole = [y for _, (_, y) in single.iterate(epoch)]
        parts, weights = [], []
        for s in shards:
            got = list(s.iterate(epoch))
            parts.append([y for _, (_, y) in got])
            w = []
            for _, (_, y) in s.iterate(epoch):
                w.append(s.weight)
            weights.append(w)
        assert all(len(p) == len(whole) for p in parts)  # every rank takes the same number of steps
        for i, batch_y in enumerate(whole):
            # the ranks' slices, in rank order, are exactly the single-process batch
            assert torch.equal(torch.cat([p[i] for p in parts]), batch_y)
            # weights: share x world size; averaged over ranks -> 1 (the loss of the whole batch)
            assert sum(w[i] * 1.0 for w in weights) / world_size == pytest.approx(1.0)
            for r in range(world_size):
                assert weights[r][i] == pytest.approx(len(parts[r][i]) * world_size / len(batch_y))
        seen = torch.cat([torch.cat(p) for p in parts])
        assert sorted(seen.tolist()) == list(range(n))  # each sample exactly once per epoch
    # resuming mid-epoch on a shard continues with the same slices
    tail = [y for _, (_, y) in shards[1].iterate(1, start=2)]
    full = [y for _, (_, y) in shards[1].iterate(1)]
    assert all(torch.equal(a, b) for a, b in zip(tail, full[2:]))


def test_bad_device_settings_fail_before_any_work(make_cfg):
    with pytest.raises(DlrunError, match="trainer.devices must be an integer >= 1"):
        validate(make_cfg("trainer.devices=0"))
    with pytest.raises(DlrunError, match="mode=eval runs in one process"):
        validate(make_cfg("trainer.devices=2", "mode=eval", "ckpt=x"))
    with pytest.raises(DlrunError, match="trick=lr_finder does not support several processes"):
        validate(make_cfg("trainer.devices=2", "trick=[lr_finder]"))
    validate(make_cfg("trainer.devices=2"))


# ---- end to end: real processes ----

TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same job in 1 process, in 2 (trainer.devices=2) and under torchrun with 2, each in its
    own folder."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = {}
    for name, launcher, extra in ((1, (sys.executable,), ["trainer.devices=1"]),
                                  (2, (sys.executable,), ["trainer.devices=2"]),
                                  ("torchrun", TORCHRUN, [])):
        cwd = tmp_path_factory.mktemp(f"devices{name}")
        proc = subprocess.run([*launcher, "-m", "dlrunner", *JOB, *extra], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = (cwd, proc)
    return out


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in (cwd / "outputs").rglob("summary.json"))


@pytest.mark.slow
def test_two_processes_match_one_and_write_one_run_folder(runs):
    import json

    (cwd1, _), (cwd2, proc2) = runs[1], runs[2]
    [run1], [run2] = run_dirs(cwd1), run_dirs(cwd2)
    # one run folder, written once: no second folder, no second copy of Hydra's files
    assert [p.name for p in (cwd2 / "outputs").glob("*/*")] == [run2.name]
    assert sorted(p.name for p in (run2 / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert "trainer.devices=2" in (run2 / ".hydra" / "overrides.yaml").read_text()
    assert proc2.stdout.count("epoch 1/3") == 1  # rank 0 alone reports
    m1, m2 = read_metrics(run1), read_metrics(run2)
    assert len(m2) == 3
    assert_same_metrics(m1, m2)
    assert m2[-1]["val/acc"] > 0.5  # it learned: the comparison is not between two untrained nets
    # the final weights agree too
    w1 = torch.load(run1 / "checkpoints" / "last.pt", weights_only=True)["model"]
    w2 = torch.load(run2 / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5, rtol=1e-4), k
    s2 = json.loads((run2 / "summary.json").read_text())
    assert s2["status"] == "completed"
    d = s2["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo"
    # the ranks together saw every training and validation sample once in an epoch
    assert d["samples_per_epoch"] == {"train": s2["data"]["train"], "val": s2["data"]["val"]}
    assert "distributed" not in json.loads((run1 / "summary.json").read_text())


@pytest.mark.slow
def test_interrupted_two_process_run_resumes(runs, tmp_path):
    """SIGTERM to the launching process (rank 0) after the first epoch: every rank stops after the
    same step, rank 0 saves; `resume=auto` on 2 processes finishes the job with the metrics of
    the uninterrupted run."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "dlrunner", *JOB, "trainer.devices=2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "outputs").rglob("metrics.csv")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    [run] = run_dirs(tmp_path)
    import json

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    done = len(read_metrics(run))
    assert 1 <= done < 3
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state"]
    res = subprocess.run([*cmd, "resume=auto"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = [r for r in run_dirs(tmp_path) if r != run]
    assert len(resumed) == 1
    info = json.loads((resumed[0] / "resume.json").read_text())
    assert info["resumed_from"] == str(run.resolve())
    assert (info["epoch"], info["batch"]) == (saved["epoch"], saved["batch"])
    final = json.loads((resumed[0] / "summary.json").read_text())
    assert final["status"] == "completed" and final["epochs_run"] == 3
    assert final["distributed"]["samples_per_epoch"]["train"] == final["data"]["train"]
    _, (cwd2, _) = runs[1], runs[2]
    [reference] = run_dirs(cwd2)
    assert_same_metrics(read_metrics(resumed[0]), read_metrics(reference))


@pytest.mark.slow
def test_torchrun_launch_trains_the_same_job(runs):
    """Under torchrun (RANK/WORLD_SIZE from the launcher, trainer.devices left at 1) the job is
    the same data-parallel run: one folder, rank 0's output, the 2-process metrics."""
    import json

    (cwd, proc), (cwd2, _) = runs["torchrun"], runs[2]
    [run] = run_dirs(cwd)
    assert [p.name for p in (cwd / "outputs").glob("*/*")] == [run.name]
    assert proc.stdout.count("epoch 1/3") == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["distributed"]["world_size"] == 2
    assert summary["distributed"]["samples_per_epoch"]["val"] == summary["data"]["val"]
    [run2] = run_dirs(cwd2)
    assert_same_metrics(read_metrics(run), read_metrics(run2))


@pytest.mark.slow
def test_bad_value_is_reported_once_before_other_processes_start(dlrun):
    r = dlrun("trainer.devices=2", "trick=[lr_finder]", "device=cpu", timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("dlrun: error:") == 1
    assert "trick=lr_finder does not support several processes yet; run `dlrun mode=lr_find` first" in r.stderr
    assert not list((dlrun.cwd / "outputs").rglob("checkpoints"))
