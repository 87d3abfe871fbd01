"""End to end through the real entry point (`python -m dlrunner`, same as `dlrun`) in a subprocess."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"


def rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_smoke_run_writes_a_complete_run_folder(dlrun):
    r = dlrun("debug=smoke")
    assert r.returncode == 0, r.stderr
    (run,) = r.run_dirs()
    for f in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv", "summary.json",
              "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / f).is_file(), f
    for f in ("curves.png", "samples.png"):
        assert (run / f).read_bytes()[:8] == PNG
    m = rows(run)
    assert [int(x["epoch"]) for x in m] == [1, 2]
    s = r.summary()
    assert s["status"] == "completed" and s["epochs_run"] == 2 and s["device"] == "cpu"
    assert s["value"] == max(float(x["val/acc"]) for x in m)  # the optimized metric, best epoch
    assert s["final"]["val/acc"] == pytest.approx(float(m[-1]["val/acc"]))
    assert s["versions"]["torch"] == torch.__version__.split("+")[0] or s["versions"]["torch"] == torch.__version__
    assert s["data"]["train"] > 0 and s["model"]["params"] > 0 and s["wall_time"] > 0
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["state"]["epoch"] == 2 and {"model", "optimizer", "schedule", "rng", "tricks"} <= set(ck)
    assert "epoch 2/2" in r.stdout and "val/acc" in r.stdout  # plain per-epoch lines off a terminal
    from dlrunner.reporting.verdict import fit_verdict
    hist = [{k: float(v) for k, v in row.items()} for row in m]
    assert s["fit"] == fit_verdict(hist) and f"fit: {s['fit']['verdict']}" in r.stdout


def test_card_example_onecycle(dlrun):
    r = dlrun("model=lenet", "trick=onecycle", "debug=smoke", "epochs=3")
    assert r.returncode == 0, r.stderr
    lrs = [float(x["lr"]) for x in rows(r.run_dirs()[0])]
    # 1cycle: above the start (3e-4/25) after warm-up, annealed far below it at the end
    assert lrs[0] > 3e-4 / 25 and lrs[-1] < 3e-4 / 25 / 100


def test_multirun(dlrun):
    r = dlrun("-m", "optim.lr=1e-3,3e-4", "debug=smoke")
    assert r.returncode == 0, r.stderr
    runs = r.run_dirs()
    assert len(runs) == 2 and all("multirun" in str(p) for p in runs)
    lrs = sorted(json.loads(json.dumps(__import__("yaml").safe_load((p / ".hydra/config.yaml").read_text())))["optim"]["lr"]
                 for p in runs)
    assert lrs == [3e-4, 1e-3]
    assert all((p / "summary.json").is_file() for p in runs)


@pytest.mark.parametrize("args, words", [
    (["optim.lr=-0.1"], "optim.lr must be > 0"),
    (["data.fraction=1.5"], "data.fraction must be in (0, 1]"),
    (["data.classes=[0,12]"], "unknown class id 12"),
    (["data=tabular", "data.name=csv", "data.path=t.csv", "data.target=nope"], "no column 'nope'"),
    (["model=lenet", "data=mnist1d", "epochs=1"], "model=lenet expects images"),
    (["trick=onecycle", "schedule=cosine"], "both set the schedule"),
    (["device=cuda:0"] if not torch.cuda.is_available() else ["device=tpu"], "device"),
    (["mode=eval"], "needs ckpt=PATH"),
    (["resume=/no/such/run"], "no such run folder"),
])
def test_bad_values_fail_before_training_with_one_line(dlrun, args, words):
    (dlrun.cwd / "t.csv").write_text("a,b\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n")
    r = dlrun(*args)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dlrun: error:") and words in err[0], r.stderr
    assert "epoch 1/" not in r.stdout
    assert not list((dlrun.cwd / "outputs").rglob(".hydra"))  # no half-written run folder is left


def test_unknown_option_lists_the_choices(dlrun):
    r = dlrun("model=lenet5")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "Available options in 'model'" in r.stderr and "resnet" in r.stderr


def test_truncated_and_foreign_checkpoints_for_eval(dlrun):
    bad = dlrun.cwd / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    r = dlrun("mode=eval", f"ckpt={bad}")
    assert r.returncode == 2 and "truncated or not a torch checkpoint" in r.stderr
    torch.save({"state_dict": {}}, dlrun.cwd / "foreign.pt")
    r = dlrun("mode=eval", f"ckpt={dlrun.cwd / 'foreign.pt'}")
    assert r.returncode == 2 and "not a dlrun checkpoint" in r.stderr


def test_eval_mode_reproduces_the_runs_metrics(dlrun):
    r = dlrun("debug=smoke", "epochs=1")
    run = r.run_dirs()[0]
    e = dlrun("mode=eval", f"ckpt={run}", "split=val")
    assert e.returncode == 0, e.stderr
    ev = json.loads((max(e.run_dirs(), key=lambda p: p.stat().st_mtime) / "eval.json").read_text())
    assert ev["val/acc"] == pytest.approx(r.summary(run)["final"]["val/acc"])
    t = dlrun("mode=eval", f"ckpt={run / 'checkpoints' / 'best.pt'}", "split=test")
    assert t.returncode == 0 and "test/acc" in t.stdout


def test_runs_never_share_a_folder(dlrun):
    fixed = "hydra.run.dir=outputs/same"
    a, b = dlrun("debug=smoke", "epochs=1", fixed), dlrun("debug=smoke", "epochs=1", fixed)
    assert a.returncode == 0 and b.returncode == 0
    dirs = sorted(p.name for p in (dlrun.cwd / "outputs").iterdir())
    assert dirs == ["same", "same-1"]


def test_user_model_data_and_loss_by_target(dlrun):
    shutil.copy(Path(__file__).parent / "userpkg.py", dlrun.cwd / "userpkg.py")
    r = dlrun("data._target_=userpkg.blobs", "model._target_=userpkg.TinyNet", "++model.hidden=8",
              "loss._target_=userpkg.ScaledCE", "epochs=30", "optim.lr=1e-2", "data.batch_size=16")
    assert r.returncode == 0, r.stderr
    s = r.summary()
    assert s["model"]["class"] == "TinyNet" and s["model"]["params"] == 5 * 8 + 8 + 8 * 3 + 3
    assert s["best"]["val/acc"] >= 0.9  # separable blobs: the user's pieces are really used
    assert "ignoring them" in r.stdout  # lenet's own keys, dropped with a note


def test_help_and_cfg(dlrun):
    h = dlrun("--help")
    assert h.returncode == 0 and "dlrun" in h.stdout and "model: " in h.stdout and "trick: " in h.stdout
    c = dlrun("--cfg", "job", "model=resnet", "trick=[onecycle,amp]")
    assert c.returncode == 0 and "build_resnet" in c.stdout and "onecycle:" in c.stdout and "amp:" in c.stdout


def test_lr_find_mode(dlrun):
    r = dlrun("mode=lr_find", "data.fraction=0.3")
    assert r.returncode == 0, r.stderr
    run = r.run_dirs()[0]
    res = json.loads((run / "lr_find.json").read_text())
    assert 1e-7 < res["suggestion"] < 10 and f"suggested lr {res['suggestion']:.2e}" in r.stdout
    assert (run / "lr_finder.png").read_bytes()[:8] == PNG
    assert not (run / "checkpoints").exists()  # nothing trained
