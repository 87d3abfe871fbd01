"""The one way a file is written: whole or not at all. The content goes to a hidden temporary file
beside the target (named per process, so two writers never share one), then is renamed over it: a
reader, or a run killed mid-write, sees the old file or the new one, never half of one."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: str | Path, write: Callable[[IO], Any], binary: bool = False, fsync: bool = False) -> Path:
    """Call `write(f)` on a temporary file, then rename it to `path`. fsync: on disk before the
    rename (a checkpoint must survive a power cut, not only a crash)."""
    def make(tmp: Path) -> None:
        with open(tmp, "wb") if binary else open(tmp, "w", newline="") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return atomic_make(path, make)


def atomic_make(path: str | Path, make: Callable[[Path], Any]) -> Path:
    """Let `make(tmp)` create the temporary file (write it, or link another file there), then
    rename it to `path`; a failure leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a killed writer of this process id's left-over
    try:
        make(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(obj: Any, path: str | Path, compact: bool = False, default: Callable[[Any], Any] = str) -> Path:
    """JSON, indented unless `compact`; values JSON has no type for (paths, dtypes) go through
    `default` (their text unless told otherwise)."""
    text = json.dumps(obj, default=default) if compact else json.dumps(obj, indent=2, default=default)
    return atomic_write(path, lambda f: f.write(text))


def write_rows(rows: list[dict], path: str | Path) -> Path:
    """A CSV with one column per key seen in any row, in first-seen order (metrics.csv)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))

    def write(f: IO) -> None:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return atomic_write(path, write)
