"""Run folders: unique names, provenance (git SHA, versions), and finding a run to resume."""
from __future__ import annotations

import json
import platform
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
        OmegaConf.register_new_resolver("dlrun_unique_dir", unique_dir)


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
