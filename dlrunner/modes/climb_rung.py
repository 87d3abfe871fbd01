"""One rung of mode=climb as its own `dlrun` process: its command line, the launch (output
streamed, signals passed on), what it left in its run folder, and finished rungs taken over from
an earlier climb (resume) instead of being trained again."""
from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from dlrunner.reporting import rundir
from dlrunner.errors import DlrunError


def override_key(override: str) -> str:
    """`+model.depth=3` -> `model.depth`."""
    return override.split("=", 1)[0].lstrip("+~")


@dataclass
class Rung:
    """One rung as planned: its own overrides and the full override list its run gets."""

    index: int
    own: list[str]  # the rung's overrides, as in climb.ladder
    overrides: list[str]  # the command line's job overrides (less mode/resume/climb) + `own`
    label: str  # "resnet", "mlp depth=3"
    key: str = ""  # train_resume.config_key of the composed rung: what a finished run of it is found by

    @property
    def folder(self) -> str:
        return f"{self.index:02d}-" + (re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-") or "rung")


@dataclass
class Result:
    """What a rung gave (a row of climb.csv)."""

    rung: int
    label: str
    overrides: list[str]
    status: str  # completed | failed | diverged | interrupted
    value: float | None = None
    gain: float | None = None  # over the best rung before it
    params: int | None = None
    time: float = 0.0
    run_dir: str = ""
    checkpoint: str = ""
    reused: bool = False  # taken from an earlier climb (resume), not trained again
    error: str = ""
    command: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "completed" and self.value is not None and math.isfinite(self.value)


def from_run(rung: Rung, run: Path, metric: str) -> Result:
    """A Result read from a rung's run folder (its summary.json)."""
    s = rundir.read_json(run / "summary.json") or {}
    best = run / "checkpoints" / "best.pt"
    value = s.get("value") if s.get("optimized_metric") == metric else None
    return Result(rung.index, rung.label, rung.own, s.get("status", "failed"), value, None,
                  (s.get("model") or {}).get("params"), float(s.get("wall_time") or 0.0), str(run),
                  str(best) if best.exists() else "", command=s.get("command", ""))


def command(hc: Any, rung: Rung, run_dir: Path, resume: str | None) -> list[str]:
    """`dlrun` arguments: the climb's config sources (--config-dir, --config-name), its Hydra
    overrides, the rung's overrides, and the rung's own run folder."""
    args = []
    for src in hc.runtime.config_sources:
        if src.provider == "command-line" and src.schema == "file":
            args += ["--config-dir", src.path]
    if hc.job.config_name != "config":
        args += ["--config-name", hc.job.config_name]
    skip = ("hydra.run.", "hydra.sweep.", "hydra.mode")
    hydra = [o for o in hc.overrides.hydra if not override_key(o).startswith(skip)]
    return [*args, *hydra, *rung.overrides, "mode=train", f"resume={resume or 'null'}", f"hydra.run.dir={run_dir}"]


def earlier_rungs(cfg: DictConfig, run_dir: Path, key: str) -> tuple[Path | None, dict[str, Path]]:
    """resume=auto | PATH: an earlier climb (the newest under out_dir with this job's key, or the
    folder given), and the run folders of its rungs by config key."""
    if cfg.resume is None:
        return None, {}
    if cfg.resume == "auto":
        found = [(p.stat().st_mtime, p.parent) for p in Path(str(cfg.out_dir)).rglob("climb.json")
                 if p.parent.resolve() != run_dir.resolve() and (rundir.read_json(p) or {}).get("key") == key]
        if not found:
            return None, {}
        old = max(found)[1]
    else:
        old = Path(str(cfg.resume)).expanduser()
        if not (old / "climb.json").is_file() and not (old / "rungs").is_dir():
            raise DlrunError(f"resume={cfg.resume}: not a climb folder (no climb.json or rungs/ in it)")
    rungs = (rundir.read_json(old / "climb.json") or {}).get("rungs", [])
    runs: dict[str, Path] = {}
    for run in [*(Path(r["run_dir"]) for r in rungs if r.get("run_dir")), *sorted((old / "rungs").glob("*"))]:
        k = run / "checkpoints" / "config_key.txt"
        if k.is_file():  # rungs that an earlier climb took over from one before it are found too
            runs.setdefault(k.read_text(), run)
    return old, runs


class Launcher:
    """Trains a rung as `python -m dlrunner ...` into <climb dir>/rungs/NN-name/, or takes it from an
    earlier climb: a completed run of the same config is reused, an interrupted one continues from
    its last checkpoint. Used as a context: while a rung runs, SIGINT/SIGTERM are noted, not raised,
    so the rung saves its checkpoint first; SIGTERM is passed on to it (a terminal's Ctrl-C reaches
    the whole process group by itself). After a signal no further rung starts."""

    def __init__(self, hc: Any, run_dir: Path, metric: str, earlier: dict[str, Path], total: int,
                 info: Callable[[str], None]):
        self.hc, self.run_dir, self.metric, self.earlier = hc, run_dir, metric, earlier
        self.total, self.info = total, info
        self.signum: int | None = None
        self.child: subprocess.Popen | None = None

    def __enter__(self) -> Launcher:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        if signum == signal.SIGTERM and self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def __call__(self, rung: Rung) -> Result:
        if self.signum is not None:  # stopped between two rungs: start no other
            return Result(rung.index, rung.label, rung.own, "interrupted")
        head = f"climb: rung {rung.index}/{self.total} ({rung.label})"
        prior = self.earlier.get(rung.key)
        status = (rundir.read_json(prior / "summary.json") or {}).get("status") if prior else None
        if status == "completed":
            self.info(f"{head}: finished earlier in {prior}")
            r = from_run(rung, prior, self.metric)
            r.reused = True
            return r
        resume = str(prior) if status == "interrupted" else None
        folder = self.run_dir / "rungs" / rung.folder
        args = command(self.hc, rung, folder, resume)
        self.info(f"{head}{f', resuming {prior}' if resume else ''}: dlrun {' '.join(args)}")
        t0 = time.time()
        rc, last = self.launch(args)
        r = from_run(rung, folder, self.metric)
        r.time, r.command = r.time or time.time() - t0, r.command or f"dlrun {' '.join(args)}"
        if rc in (130, 143) or self.signum is not None:
            r.status = "interrupted"
        elif rc != 0 or not r.ok:
            r.status = r.status if r.status in ("diverged", "failed") else "failed"
            r.error = last.removeprefix("dlrun: error: ") if rc else f"no finite {self.metric} in its summary.json"
        return r

    def launch(self, args: list[str]) -> tuple[int, str]:
        """Run `python -m dlrunner ARGS`, its output passed through as it comes; returns the exit
        status and the last line it wrote to stderr (its error, if any)."""
        proc = subprocess.Popen([sys.executable, "-m", "dlrunner", *args], stderr=subprocess.PIPE, text=True,
                                bufsize=1)
        self.child = proc
        tail: deque[str] = deque(maxlen=1)
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                tail.append(line.strip())
        return proc.wait(), (tail[0] if tail else "")
