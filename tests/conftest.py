"""Shared fixtures: compose the real config in-process, or run the real CLI in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dlrunner.cli import CONF_DIR
from dlrunner.reporting.rundir import register_resolvers

# the runs of a test worker share one prepared-data cache, as a user's runs share ./data; set before
# any fixture copies the environment, so a run in a subprocess and the test reading its config agree
os.environ["DLRUN_DATA"] = tempfile.mkdtemp(prefix="dlrun-data-")

# one intra-op thread per test worker when the suite runs in parallel (make test: pytest -n 2)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))
# and one in every process a test starts (a run, a sweep's trials): two workers' runs each spinning
# threads over both cores would mostly wait on each other
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_cfg(tmp_path):
    """Compose conf/ exactly as `dlrun` does, with overrides, outputs under tmp_path."""
    register_resolvers()

    def make(*overrides: str):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("config", overrides=[f"out_dir={tmp_path / 'outputs'}", *overrides])
    return make


class Result:
    def __init__(self, proc: subprocess.CompletedProcess, cwd: Path):
        self.proc, self.cwd = proc, cwd
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    def run_dirs(self) -> list[Path]:
        return sorted(p.parent for p in (self.cwd / "outputs").rglob(".hydra"))

    def summary(self, run: Path | None = None) -> dict:
        run = run or self.run_dirs()[-1]
        return json.loads((run / "summary.json").read_text())


@pytest.fixture
def dlrun(tmp_path):
    """Run the real console entry point (`python -m dlrunner`) in tmp_path."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    env.pop("CUDA_VISIBLE_DEVICES", None)

    def run(*args: str, timeout: float = 240, cwd: Path | None = None) -> Result:
        cwd = cwd or tmp_path
        proc = subprocess.run([sys.executable, "-m", "dlrunner", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
        return Result(proc, cwd)
    run.env = env
    run.cwd = tmp_path
    return run


@pytest.fixture
def sigterm_at():
    """`with sigterm_at(n): runner.train(...)`: the runner's stop check (called after every step and once
    at each epoch end) reports SIGTERM from its n-th call on, as if the signal arrived right then."""
    import contextlib
    import signal
    from unittest import mock

    from dlrunner.modes import train as runner
    @contextlib.contextmanager
    def patch(n: int):
        calls = {"n": 0}

        def check(self):
            calls["n"] += 1
            if calls["n"] == n:
                self.signum = signal.SIGTERM
            return self.signum is not None
        with mock.patch.object(runner.StopSignal, "__call__", check):
            yield
    return patch
