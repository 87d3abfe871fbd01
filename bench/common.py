"""What every `make bench` section uses: the machine's name, `dlrun` as a subprocess, conf/
composed in-process, and a run trained in this process."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from dlrunner.reporting.console import Reporter


ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} threads, {gpu}, torch {torch.__version__}"


def dlrun(args: list[str], cwd: Path) -> tuple[dict, float]:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "dlrunner", *args, "hydra.run.dir=outputs/run"], cwd=cwd, check=True,
                   capture_output=True, text=True)
    wall = time.time() - t0
    return json.loads((cwd / "outputs" / "run" / "summary.json").read_text()), wall


def compose_cfg(overrides: list[str]):
    """conf/ composed with these overrides, as `dlrun` composes it."""
    from hydra import compose, initialize_config_dir

    from dlrunner.reporting.rundir import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


class EpochStarts(Reporter):
    """A silent Reporter that notes when each epoch starts (as Lightning's on_train_epoch_start)."""

    def __init__(self):
        super().__init__(live=False)
        self.console.quiet = True
        self.starts: list[float] = []

    @contextmanager
    def epoch(self, *args, **kwargs):
        self.starts.append(time.perf_counter())
        yield


def train_here(run_dir: Path, overrides: list[str]) -> tuple[list[float], dict]:
    """`dlrun <overrides>` in this process, all of it (build, epochs with checkpoints and metrics.csv,
    the end-of-run analysis) but Hydra's start-up; returns when each epoch started, and summary.json."""
    from dlrunner.modes import train as runner
    run_dir.mkdir(parents=True)
    out = EpochStarts()
    runner.train(compose_cfg(overrides), run_dir, {}, out)
    return out.starts, json.loads((run_dir / "summary.json").read_text())


def mnist1d_root(tmp: Path) -> str:
    return f"data.root={tmp / 'data'}"  # generated once, shared by every run
