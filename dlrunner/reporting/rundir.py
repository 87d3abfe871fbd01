"""Run folders: unique names, provenance (git SHA, versions), and finding a run to resume."""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def unique_dir(path: str, _seen: dict[str, str] = {}) -> str:  # noqa: B006 - per-process cache on purpose
    """`path`, or `path-1`, `path-2`... if a run already lives there: no run overwrites another.
    Cached per process so Hydra's repeated resolutions agree."""
    if path not in _seen:
        candidate, n = path, 0
        while Path(candidate).exists() and any(Path(candidate).iterdir()):
            n += 1
            candidate = f"{path}-{n}"
        _seen[path] = candidate
    return _seen[path]


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("dlrun_unique_dir"):
        # cached in the config: Hydra copies the sweep config's resolver cache into every job's
        # config, so jobs launched in other processes (joblib, Ray, submitit) share the folder the
        # main process chose instead of each picking its own `-1`, `-2`
        OmegaConf.register_new_resolver("dlrun_unique_dir", unique_dir, use_cache=True)


def git_sha(cwd: str | Path = ".") -> str | None:
    """The commit of the repository the run was launched in, '+dirty' with local changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("dlrunner", "torch", "torchvision", "hydra-core", "omegaconf", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def command_line() -> str:
    return " ".join(["dlrun", *sys.argv[1:]])


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_resumable(out_dir: str | Path, config_key: str, exclude: Path | None = None) -> Path | None:
    """The newest run under out_dir whose job config equals `config_key`, that did not complete
    and that no later run has already resumed."""
    root = Path(out_dir)
    if not root.is_dir():
        return None
    taken = set()
    for marker in root.rglob("resume.json"):
        info = read_json(marker) or {}
        if info.get("resumed_from"):
            taken.add(str(Path(info["resumed_from"]).resolve()))
    found = []
    for last in root.rglob("checkpoints/last.pt"):
        run = last.parent.parent
        if exclude is not None and run.resolve() == exclude.resolve():
            continue
        summary = read_json(run / "summary.json") or {}
        if summary.get("status") == "completed" or str(run.resolve()) in taken:
            continue
        key = (run / "checkpoints" / "config_key.txt")
        if key.is_file() and key.read_text() == config_key:
            found.append((last.stat().st_mtime, run))
    return max(found)[1] if found else None


def _holder_alive(held: dict) -> bool:
    """Whether the process in an owner.json may still be training: its run folder has no
    summary.json yet and, on this host, its pid is alive (another host's process is assumed alive)."""
    if not held.get("run_dir") or (Path(held["run_dir"]) / "summary.json").exists():
        return False
    if held.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(held.get("pid", -1)), 0)
    except (OSError, ValueError):
        return False
    return True


def claim(run: Path, by: Path) -> None:
    """Mark the run folder `run` as trained by this process, into `by` (itself, or the folder of a
    run that resumes it): checkpoints/owner.json, created exclusively. Refuse in one line while
    another live process holds it, so that two terminals or a requeued job beside the old one do not
    both continue the same run. A claim whose process has finished or died is replaced."""
    from dlrunner.errors import DlrunError

    lock = Path(run) / "checkpoints" / "owner.json"
    if not lock.parent.is_dir():  # a checkpoint file outside a run folder: nothing to mark
        return
    info = {"run_dir": str(Path(by).resolve()), "pid": os.getpid(), "host": socket.gethostname()}
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        held = read_json(lock) or {}
        if held.get("run_dir") != info["run_dir"] and _holder_alive(held):
            raise DlrunError(f"resume: {run} is still being trained by another process (pid {held.get('pid')} on "
                             f"{held.get('host')}, into {held.get('run_dir')}); let it finish or stop it first "
                             f"(if that process is gone, delete {lock})") from None
        from dlrunner.reporting.files import write_json

        write_json(info, lock, compact=True)
        return
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)


HYDRA_ONLY = {".hydra", "dlrun.log"}  # what Hydra writes into a run folder before dlrun starts
STARTED_ONLY = {"config_key.txt", "owner.json"}  # what a run writes into checkpoints/ before training


def discard_unstarted(run_dir: Path, out_dir: str | Path | None = None) -> bool:
    """Remove a run folder that holds nothing but what was written before the job was refused
    (Hydra's .hydra/ and log, the run's config key and owner claim), so that bad input leaves no
    half-written run behind. Anything else in it, and the folder is kept. Folders between it and
    `out_dir` (outputs/DATE/) that are left empty go too. True when removed."""
    import shutil

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    names = {p.name for p in run_dir.iterdir()}
    ck = run_dir / "checkpoints"
    if not names <= HYDRA_ONLY | {"checkpoints"} or (ck.is_dir() and not {p.name for p in ck.iterdir()} <= STARTED_ONLY):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    top = Path(out_dir).resolve() if out_dir is not None else None
    parent = run_dir.resolve().parent
    while top is not None and parent != top and top in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return True
