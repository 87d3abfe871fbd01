"""Read an offline W&B run back from its run file, `offline-run-*/run-ID.wandb`: W&B's own record
messages (`wandb.proto.wandb_internal_pb2.Record`) framed as a LevelDB log (32 KiB blocks; each
chunk a 7-byte header: CRC, length, kind FULL/FIRST/MIDDLE/LAST), after a 7-byte file header `:W&B`.
What `wandb sync` uploads is exactly these records."""
from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero-filled rest of a block
            pos += BLOCK - pos % BLOCK
            continue
        if pos + 7 + n > len(data):  # a chunk still being written
            break
        parts += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(parts)
            out.append(rec)
            parts = b""
    return out


def _put(tree: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    id: str = ""
    name: str = ""
    resume: bool = False
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # one dict per step, `_step` included
    summary: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    preempting: bool = False
    exit_code: int | None = None


def read_run(folder: Path, wait: float = 60.0) -> OfflineRun:
    """One offline-run-* folder -> what it recorded. wandb's service process writes the file on its own
    after `finish` returns (and before the process exits), so this waits for the run's exit record."""
    deadline = time.monotonic() + wait
    while True:
        run = _read(folder)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def _read(folder: Path) -> OfflineRun:
    (path,) = Path(folder).glob("run-*.wandb")
    run = OfflineRun()
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run.id, run.name, run.resume = rec.run.run_id, rec.run.display_name, rec.run.resume
            for item in rec.run.config.update:
                _put(run.config, item)
        elif kind == "config":
            for item in rec.config.update:
                _put(run.config, item)
        elif kind == "history":
            row: dict = {}
            for item in rec.history.item:
                _put(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                _put(run.summary, item)
        elif kind == "files":
            run.files += [f.path for f in rec.files.files]
        elif kind == "preempting":
            run.preempting = True
        elif kind == "exit":
            run.exit_code = rec.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def offline_runs(run_dir: Path) -> list[Path]:
    """The offline W&B runs under a dlrun run folder, oldest first."""
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
