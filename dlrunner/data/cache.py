"""Prepared data sets kept on disk: built once (generated, downloaded, resized), then loaded in
milliseconds by every later run, keyed by where they came from and how they were prepared."""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch


def package_version(name: str) -> str | None:
    """An installed distribution's version, read from its metadata (the package is not imported)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cache_path(root: str | Path, name: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(root).expanduser() / "prepared" / f"{name}-{digest}.pt"


def cached(root: str | Path, name: str, key: dict[str, Any], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`build()`'s tensors (a dict of tensors, lists, strings, numbers), from `root/prepared/` when a
    file with the same key is there. A broken or foreign file is rebuilt, never trusted; a root that
    cannot be written only means no cache."""
    path = cache_path(root, name, key)
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            if saved.get("key") == json.loads(json.dumps(key, default=str)):
                return saved["data"]
        except Exception:  # noqa: BLE001 - truncated, foreign or from another torch: rebuild
            pass
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from dlrunner.reporting.files import atomic_write

        # a concurrent reader sees the old state or the whole file
        atomic_write(path, lambda f: torch.save({"key": json.loads(json.dumps(key, default=str)), "data": data}, f),
                     binary=True)
    except OSError:
        pass
    return data
