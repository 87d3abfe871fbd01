"""A run costs its epochs and little else: nothing imported that the job does not use, data sets
prepared once, pictures drawn off the training path, and the rest measured in summary.json."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time

import pytest
import torch

from dlrunner.engine import checkpoint

from dlrunner.modes import train as runner
from dlrunner.build import build_job
from dlrunner.reporting.console import Reporter
from dlrunner.data import cache
from dlrunner.reporting.painter import Painter
from dlrunner.reporting.timing import Timings

CPU = torch.device("cpu")


def run_cli(args: list[str], cwd, check_modules=("torch",), env=None) -> subprocess.CompletedProcess:
    """dlrun's entry point in a fresh interpreter; fails if it imported any of `check_modules`."""
    code = ("import sys\nsys.argv = ['dlrun'] + sys.argv[1:]\nfrom dlrunner.cli import launch as main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            f"loaded = [m for m in {list(check_modules)!r} if m in sys.modules]\n"
            "assert not loaded, f'imported {loaded}'\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"], ["--info"], ["model=resnet", "--help"]])
def test_help_cfg_and_info_do_not_import_torch(tmp_path, args):
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dlrun" in r.stdout or "model" in r.stdout


def test_help_text_is_hydras_own(tmp_path):
    """The shared group listing changes the time --help takes, not a character of what it prints."""
    ours = run_cli(["--help"], tmp_path)
    hydra_path = ("import sys\nsys.argv = ['dlrun', '--help']\nfrom dlrunner.cli import app\n"
                  "from dlrunner.reporting.rundir import register_resolvers\nregister_resolvers()\n"
                  "try:\n    app()\nexcept SystemExit:\n    pass\n")
    theirs = subprocess.run([sys.executable, "-c", hydra_path], cwd=tmp_path, capture_output=True, text=True)
    assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
    assert ours.stdout == theirs.stdout
    assert "== Configuration groups ==" in ours.stdout and "model: " in ours.stdout


def test_digits_are_prepared_once_then_read_from_the_cache(make_cfg, tmp_path):
    root = tmp_path / "data"
    first = build_job(make_cfg(f"data.root={root}"), CPU, print).data
    (path,) = (root / "prepared").glob("digits-*.pt")
    # a second process loads the same tensors without importing scikit-learn
    code = ("import sys, torch\nfrom dlrunner.data.digits import build_digits\n"
            f"b = build_digits(root={str(root)!r})\n"
            "assert 'sklearn' not in sys.modules, 'sklearn imported'\n"
            "torch.save({'x': b.train.x, 'y': b.train.y}, sys.argv[1])\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b.pt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    again = torch.load(tmp_path / "b.pt")
    assert torch.equal(again["x"], first.train.x) and torch.equal(again["y"], first.train.y)
    # another preparation is another file; a broken file is rebuilt, never trusted
    build_job(make_cfg(f"data.root={root}", "data.size=16"), CPU, print)
    assert len(list((root / "prepared").glob("digits-*.pt"))) == 2
    path.write_bytes(b"not a checkpoint")
    rebuilt = build_job(make_cfg(f"data.root={root}"), CPU, print).data
    assert torch.equal(rebuilt.train.x, first.train.x)
    assert torch.load(path, weights_only=True)["key"]["size"] == 28


def test_cache_key_mismatch_rebuilds(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(3)}
    key = {"source": "test", "n": 3}
    assert torch.equal(cache.cached(tmp_path, "t", key, build)["x"], torch.arange(3))
    assert torch.equal(cache.cached(tmp_path, "t", key, build)["x"], torch.arange(3))
    assert len(calls) == 1
    path = cache.cache_path(tmp_path, "t", key)
    torch.save({"key": {"source": "other"}, "data": {"x": torch.zeros(3)}}, path)  # a file under the wrong name
    assert torch.equal(cache.cached(tmp_path, "t", key, build)["x"], torch.arange(3)) and len(calls) == 2


def test_unwritable_root_still_builds(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = cache.cached(blocker, "t", {"k": 1}, lambda: {"x": torch.ones(2)})  # root is a file: no cache
    assert torch.equal(out["x"], torch.ones(2))


@pytest.mark.slow
def test_summary_reports_where_the_time_went(dlrun):
    r = dlrun("debug=smoke")
    assert r.returncode == 0, r.stderr
    s = r.summary()
    t = s["timings"]
    assert {"build", "epochs", "checkpoints", "analysis", "plots", "finish", "other", "total"} <= set(t)
    with (r.run_dirs()[-1] / "metrics.csv").open() as f:
        epochs = sum(float(row["time"]) for row in csv.DictReader(f))
    # the epochs part is the loop: at least the epochs' own time, and not much more (bookkeeping)
    assert epochs <= t["epochs"] + 1e-3 and t["epochs"] < epochs + 1.0
    foreground = sum(v for k, v in t.items() if k not in ("plots", "total"))
    assert foreground == pytest.approx(t["total"], abs=0.01)
    assert t["total"] == pytest.approx(s["wall_time"], abs=0.1)


@pytest.mark.parametrize("plots,expected", [
    ("none", set()),
    ("end", {"samples.png", "curves.png", "confusion.png", "top_losses.png"}),
    ("all", {"samples.png", "curves.png", "confusion.png", "top_losses.png"}),
])
def test_plots_knob(make_cfg, tmp_path, plots, expected):
    cfg = make_cfg("debug=smoke", "epochs=1", f"plots={plots}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runner.train(cfg, run_dir, {}, Reporter(live=False))
    assert {p.name for p in run_dir.glob("*.png")} == expected
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "completed" and sum(map(sum, s["confusion"]["matrix"])) > 0  # the numbers stay


def test_curves_are_redrawn_after_every_epoch_with_plots_all(make_cfg, tmp_path):
    class Recorder:
        def __init__(self):
            self.calls = []

        def submit(self, key, fn, *args):
            self.calls.append((key, len(args[0]) if key == "curves" else None))
    from dlrunner.engine.loop import Meter, TrainState

    for plots, want in (("all", [("curves", 1), ("curves", 2), ("curves", 3)]), ("end", [])):
        cfg = make_cfg("debug=smoke", "epochs=3", f"plots={plots}")
        job = build_job(cfg, CPU, print)
        rec, state = Recorder(), TrainState()
        with runner.StopSignal() as stop:
            runner.run_epochs(cfg, job, state, Meter(CPU), stop, checkpoint.Discard(), tmp_path, Reporter(live=False),
                              painter=rec)
        assert rec.calls == want


def test_painter_draws_in_the_background_keeps_the_newest_and_reports_errors():
    warnings, drawn = [], []
    gate = threading.Event()
    p = Painter(warnings.append)

    def slow(tag):
        gate.wait(5)
        drawn.append(tag)
    p.submit("a", slow, "a1")
    time.sleep(0.05)  # a1 is being drawn
    p.submit("b", drawn.append, "b1")
    p.submit("b", drawn.append, "b2")  # replaces b1 while it waits
    p.submit("c", lambda: 1 / 0)
    assert drawn == []  # submit never waits for the drawing
    gate.set()
    p.wait()
    assert drawn == ["a1", "b2"]
    assert not any(t.name == "dlrun-painter" for t in threading.enumerate())  # no idle thread left behind
    p.submit("d", drawn.append, "d1")  # a later picture starts a new worker
    p.wait()
    assert drawn[-1] == "d1"
    assert warnings == ["picture skipped (c: ZeroDivisionError: division by zero)"]
    assert p.seconds > 0


def test_timings_add_up():
    t = Timings()
    with t("a"):
        time.sleep(0.02)
    t.add("bg", 5.0)
    rep = t.report(background=("bg",))
    assert rep["a"] >= 0.02 and rep["bg"] == 5.0
    assert rep["a"] + rep["other"] == pytest.approx(rep["total"], abs=2e-3)


@pytest.mark.parametrize("args,line", [
    (["optim.eps=-1"], "dlrun: error: optim (adamw): Invalid epsilon value: -1"),
    (["data._target_=numpy.load", "+data.file=missing.npy"], "dlrun: error: data (digits): [Errno 2] No such file"),
    (["model._target_=torch.nn.Dropout", "+model.p=2.0"], "dlrun: error: model (lenet): dropout probability"),
])
def test_a_constructor_error_is_one_line_naming_the_group(dlrun, args, line):
    """Values only torch's (or a user's) constructor rejects: one line, exit 2, nothing trained."""
    r = dlrun(*args, "epochs=1")
    assert r.returncode == 2, r.stderr
    err = [x for x in r.stderr.splitlines() if x.strip()]
    assert err[-1].startswith(line) and "Traceback" not in r.stderr
    assert not list((r.cwd / "outputs").rglob(".hydra"))  # refused before any work: no run folder left
    full = subprocess.run([sys.executable, "-m", "dlrunner", *args, "epochs=1"], cwd=r.cwd, capture_output=True,
                          text=True, env={**dlrun.env, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


@pytest.mark.slow
def test_a_run_imports_only_what_it_uses(dlrun):
    """After the data set is prepared once, the default smoke run imports neither scikit-learn nor
    matplotlib nor torchvision (its pictures are drawn with PIL, its data read from the cache)."""
    assert dlrun("debug=smoke", "epochs=1").returncode == 0  # prepares the cache when it is not there
    r = run_cli(["debug=smoke", "epochs=1"], dlrun.cwd, check_modules=("sklearn", "matplotlib", "torchvision"),
                env=dlrun.env)
    assert r.returncode == 0, r.stderr


def test_quick_exit_keeps_what_finalization_promises(tmp_path):
    """dlrun leaves without module teardown, but other threads are joined, atexit handlers run,
    buffered output is flushed and the exit status is kept."""
    code = (
        "import atexit, pathlib, sys, threading, time\n"
        "from dlrunner.quickexit import exit_now\n"
        "d = pathlib.Path(sys.argv[1])\n"
        "atexit.register(lambda: (d / 'atexit').write_text('ran'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), (d / 'thread').write_text('done'))).start()\n"
        "sys.stdout.write('buffered')\n"
        "exit_now(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 3 and r.stdout == "buffered"
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"
    # a worker pool whose threads stop only in threading's exit hooks (joblib's loky executor, which
    # a joblib sweep leaves behind, works the same way): the process still ends, at once
    pool = ("from concurrent.futures import ThreadPoolExecutor\n"
            "from dlrunner.quickexit import exit_now\n"
            "pool = ThreadPoolExecutor(2)\npool.submit(int, '7').result()\n"
            "exit_now(0)\n")
    r = subprocess.run([sys.executable, "-c", pool], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-c", "from dlrunner.quickexit import exit_now; exit_now('bad thing')"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == "bad thing"


def test_a_joblib_multirun_ends_when_its_jobs_do_and_keeps_them_together(dlrun):
    """joblib's worker pool keeps a manager thread that stops only in threading's exit hooks: dlrun
    leaves once the jobs are done instead of waiting on it. Each job, in its own worker process, lands
    in the one sweep folder the main process chose (not `-1`, `-2` beside it)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    r = dlrun("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "debug=smoke", "epochs=1",
              "optim.lr=1e-3,3e-4", timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    sweeps = list((dlrun.cwd / "outputs" / "multirun").glob("*/*"))
    assert len(sweeps) == 1 and sorted(p.parent.name for p in sweeps[0].glob("*/summary.json")) == ["0", "1"]
