"""`dlrun mode=predict ckpt=PATH input=PATH_OR_GLOB`: a trained model on new files.

Raw inputs go through the checkpoint's own preprocessing (what its data pipeline did to training
inputs before normalization, then (x - mean) / std with the checkpoint's statistics):
  images (PNG, JPEG, ...)  converted to the model's channel count, resized to its H x W, pixels
                           scaled to [0, 1] (folder runs: the very torchvision transform they used)
  CSV                      tabular: the feature columns the run was trained on (text columns are
                           one-hot again); sequences: one sequence per row (C*T values)
  .pt / .npy               tensors already in the pipeline's scale: (N, *in_shape) or (*in_shape)
"""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from dlrunner.engine import checkpoint
from dlrunner.build import rebuild
from dlrunner.reporting.console import Reporter
from dlrunner.reporting.files import atomic_write
from dlrunner.data.core import broadcast
from dlrunner.errors import DlrunError
from dlrunner.modes import ModeRun

if TYPE_CHECKING:
    from dlrunner.engine.job import Job

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TENSOR_EXT = (".pt", ".pth", ".npy")
TABLE_EXT = (".csv",)
SUPPORTED = IMAGE_EXT + TENSOR_EXT + TABLE_EXT
BATCH = 256
SHOWN = 50  # rows of the console table; all of them go to predictions.csv

# what each bundled pipeline hands to normalization, for the messages
RAW_SCALE = {"digits": "pixels in [0, 1]", "mnist": "pixels in [0, 1]", "fashion_mnist": "pixels in [0, 1]",
             "cifar10": "pixels in [0, 1]", "folder": "pixels in [0, 1]", "mnist1d": "the generated values"}


@dataclass
class Inputs:
    """Raw samples read from the user's files, before normalization."""

    names: list[str]  # one per sample: the file, or file[row]
    x: torch.Tensor  # (N, *in_shape) float32 in the pipeline's scale


def expectation(meta: dict) -> str:
    """What the model takes, in words, for error messages."""
    shape = tuple(meta["in_shape"])
    name = meta["name"]
    scale = RAW_SCALE.get(name, "raw feature values" if meta["modality"] == "tabular"
                          else "values before normalization")
    return f"{shape} ({name}: {scale}, normalized by the checkpoint)"


def find_files(spec: str) -> list[Path]:
    """A file, a folder (its supported files) or a glob; one line when nothing is there."""
    p = Path(str(spec)).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED)
        if not files:
            raise DlrunError(f"input={spec}: no image, CSV, .pt or .npy file in this folder")
        return files
    if p.is_file():
        files = [p]
    elif glob.has_magic(str(spec)):
        files = sorted(Path(m) for m in glob.glob(os.path.expanduser(str(spec)), recursive=True) if Path(m).is_file())
        if not files:
            raise DlrunError(f"input={spec}: no file matches this pattern")
    else:
        raise DlrunError(f"input={spec}: no such file or folder")
    bad = [f for f in files if f.suffix.lower() not in SUPPORTED]
    if bad:
        raise DlrunError(f"input {bad[0].name}: unsupported file type {bad[0].suffix or '(none)'}; "
                         "use images (PNG, JPEG...), a CSV, or a .pt / .npy tensor")
    return files


def read_image(path: Path, meta: dict) -> torch.Tensor:
    """(C, H, W) pixels in [0, 1], the way the checkpoint's pipeline produced them."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = meta["in_shape"]
    if meta["modality"] != "image":
        raise DlrunError(f"input {path.name} is an image; this model takes {meta['modality']} inputs "
                         f"{expectation(meta)}: give a CSV or a .pt / .npy tensor")
    if c not in (1, 3):
        raise DlrunError(f"input {path.name}: this model takes {c}-channel images; give a .pt / .npy tensor of "
                         f"shape {expectation(meta)}")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as e:
        raise DlrunError(f"input {path.name}: cannot read it as an image ({e})") from None
    if meta["name"] == "folder" and h == w:
        from dlrunner.data.folder import _transform  # the run's own transform (resize, grayscale, [0, 1])

        return _transform(h, c)(img.convert("RGB"))  # as torchvision's default_loader reads it
    img = img.convert("L" if c == 1 else "RGB")
    x = torch.from_numpy(np.array(img, dtype=np.float32)) / 255.0
    x = x.unsqueeze(0) if c == 1 else x.permute(2, 0, 1)
    if tuple(x.shape[1:]) != (h, w):  # e.g. digits: the pipeline upsamples 8x8 bilinearly, likewise here
        down = x.shape[1] > h or x.shape[2] > w
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=down)[0]
    return x.contiguous()


def read_tensor(path: Path, meta: dict) -> torch.Tensor:
    """A saved array of raw inputs: (N, *in_shape) or one sample (*in_shape)."""
    shape = tuple(meta["in_shape"])
    try:
        if path.suffix.lower() == ".npy":
            obj = np.load(path, allow_pickle=False)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # numpy and torch raise ValueError, OSError, UnpicklingError... by damage
        raise DlrunError(f"input {path.name}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0][:100]})") from None
    if not isinstance(obj, (torch.Tensor, np.ndarray)):
        raise DlrunError(f"input {path.name} holds a {type(obj).__name__}; expected one tensor or array")
    x = torch.as_tensor(np.asarray(obj) if isinstance(obj, np.ndarray) else obj)
    if not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise DlrunError(f"input {path.name} has dtype {x.dtype}; expected numbers")
    if tuple(x.shape) == shape:
        x = x[None]
    elif tuple(x.shape[1:]) != shape:
        raise DlrunError(f"input {path.name} has shape {tuple(x.shape)}; this model expects {expectation(meta)} "
                         f"or a batch (N, {', '.join(map(str, shape))})")
    return x.float()


def _number(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DlrunError(f"input {where}: {value!r} is not a number") from None


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if any(v.strip() for v in r)]
    if not rows:
        raise DlrunError(f"input {path.name}: the CSV is empty")
    return rows


def _is_numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
        return True
    except ValueError:
        return False


def _by_header(path: Path, rows: list[list[str]], features: list[str]) -> torch.Tensor:
    """Rebuild the training columns by name: numeric columns as they are, `col=value` one-hot."""
    header, body = [h.strip() for h in rows[0]], rows[1:]
    col = {h: i for i, h in enumerate(header)}
    missing = [f for f in features if f not in col and f.partition("=")[0] not in col]
    if missing:
        raise DlrunError(f"input {path.name}: no column {', '.join(repr(m) for m in missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; this model expects the columns "
                         f"{', '.join(features)} ({len(features)} features)")
    out = np.zeros((len(body), len(features)), dtype=np.float32)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise DlrunError(f"input {path.name}: row {r + 2} has {len(row)} fields, the header has {len(header)}")
        for j, f in enumerate(features):
            if f in col:
                out[r, j] = _number(row[col[f]].strip(), f"{path.name} row {r + 2}, column {f!r}")
            else:  # a text column the pipeline one-hot encoded
                name, _, cat = f.partition("=")
                out[r, j] = float(row[col[name]].strip() == cat)
    return torch.from_numpy(out)


def read_csv(path: Path, meta: dict) -> torch.Tensor:
    """Tabular: the training features by column name (a header is needed when the run recorded
    them); sequences: one per row, C*T numbers. A header row without names is skipped."""
    shape = tuple(meta["in_shape"])
    if meta["modality"] == "image":
        raise DlrunError(f"input {path.name} is a CSV; this model takes images {expectation(meta)}")
    rows = _rows(path)
    features = list(meta.get("features") or [])
    if meta["modality"] == "tabular" and features:
        if _is_numeric(rows[0]):
            raise DlrunError(f"input {path.name} has no header row; this model expects the columns "
                             f"{', '.join(features)} ({len(features)} features)")
        return _by_header(path, rows, features)
    body = rows if _is_numeric(rows[0]) else rows[1:]
    width = int(np.prod(shape))
    for r, row in enumerate(body):
        if len(row) != width:
            what = "features" if meta["modality"] == "tabular" else "values (one sequence per row)"
            raise DlrunError(f"input {path.name}: a row has {len(row)} values; this model expects {width} {what}, "
                             f"shape {expectation(meta)}")
    x = [[_number(v.strip(), f"{path.name} row {r + 1}") for v in row] for r, row in enumerate(body)]
    return torch.tensor(x, dtype=torch.float32).view(len(body), *shape)


def read_inputs(files: list[Path], meta: dict) -> Inputs:
    names, xs = [], []
    for f in files:
        suffix = f.suffix.lower()
        if suffix in IMAGE_EXT:
            x = read_image(f, meta)[None]
        elif suffix in TABLE_EXT:
            x = read_csv(f, meta)
        else:
            x = read_tensor(f, meta)
        names += [str(f)] if len(x) == 1 else [f"{f}[{i}]" for i in range(len(x))]
        xs.append(x)
    x = torch.cat(xs)
    if len(x) == 0:
        raise DlrunError(f"input: no samples in {', '.join(f.name for f in files[:3])}")
    return Inputs(names, x)


def normalize(x: torch.Tensor, meta: dict) -> torch.Tensor:
    mean, std = torch.as_tensor(meta["mean"]).float(), torch.as_tensor(meta["std"]).float()
    return (x - broadcast(mean, x.dim())) / broadcast(std, x.dim())


def logits(job: Job, x: torch.Tensor) -> torch.Tensor:
    """Scores as the run's evaluation computes them (dlrunner.engine.evaluate: eval mode, autocast,
    the tricks' predictions). A run trained on cached activations (precompute) predicts with its
    full network."""
    from dlrunner.engine.evaluate import passes

    full = job.full_model is not None
    net = job.full_model if full else job.model
    chunks = ((chunk.to(job.device), None) for chunk in x.split(BATCH))
    return torch.cat([out.float().cpu() for out, _, _ in passes(net, chunks, job.precision,
                                                                 None if full else job.tricks.predict)])


def write_csv(path: Path, names: list[str], probs: torch.Tensor, class_names: list[str]) -> None:
    pred = probs.argmax(1)

    def write(f) -> None:
        w = csv.writer(f)
        w.writerow(["input", "pred", "prob", *[f"p_{c}" for c in class_names]])
        for i, name in enumerate(names):
            w.writerow([name, class_names[int(pred[i])], f"{float(probs[i, pred[i]]):.6f}",
                        *[f"{float(p):.6f}" for p in probs[i]]])
    atomic_write(path, write)


def show(out: Reporter, names: list[str], probs: torch.Tensor, class_names: list[str]) -> None:
    from rich.table import Table

    k = min(3, len(class_names))
    top_p, top_i = probs.topk(k, dim=1)
    t = Table(title=f"predictions ({len(names)} inputs)", show_edge=True)
    for col, justify in (("input", "left"), ("predicted", "left"), ("prob", "right"), (f"top-{k}", "left")):
        t.add_column(col, justify=justify)
    for i, name in enumerate(names[:SHOWN]):
        top = ", ".join(f"{class_names[int(c)]} {float(p):.3f}" for p, c in zip(top_p[i], top_i[i]))
        t.add_row(name, class_names[int(top_i[i, 0])], f"{float(top_p[i, 0]):.3f}", top)
    out.console.print(t)
    if len(names) > SHOWN:
        out.info(f"... {len(names) - SHOWN} more rows in predictions.csv")


def predict(cfg: DictConfig, run_dir: Path, out: Reporter) -> None:
    """mode=predict: read and check the inputs first (one line on a problem), then rebuild the
    checkpoint's job and write predictions.csv."""
    ckpt = checkpoint.load(cfg.ckpt)
    meta = ckpt["data"]
    inputs = read_inputs(find_files(str(cfg.input)), meta)
    job = rebuild(ckpt, str(cfg.device), out.warn)
    probs = logits(job, normalize(inputs.x, meta)).softmax(dim=1)
    names = list(meta["class_names"])
    write_csv(run_dir / "predictions.csv", inputs.names, probs, names)
    show(out, inputs.names, probs, names)
    out.info(f"predict: {len(inputs.names)} inputs, checkpoint {checkpoint.resolve(cfg.ckpt)}; "
             f"written {run_dir / 'predictions.csv'}")


def run(job: ModeRun) -> None:
    return predict(job.cfg, job.run_dir, job.out)
