"""Tabular data, the "other" modality: scikit-learn's bundled sets or any CSV file."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from dlrunner.data.cache import cached, package_version
from dlrunner.data.core import DataBundle, check_knobs, from_tensors
from dlrunner.errors import DlrunError

BUNDLED = ("wine", "breast_cancer")


def _load_bundled(name: str) -> dict:
    from sklearn import datasets

    d = getattr(datasets, f"load_{name}")()
    return {"x": torch.from_numpy(d.data.astype(np.float32)), "y": torch.from_numpy(d.target.astype(np.int64)),
            "classes": [str(n) for n in d.target_names],
            "features": [str(f) for f in d.feature_names]}  # recorded so a CSV can be matched at predict time


def _bundled(name: str, root: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    key = {"source": f"sklearn.datasets.load_{name}", "scikit-learn": package_version("scikit-learn")}
    d = cached(root, f"tabular-{name}", key, lambda: _load_bundled(name))
    return d["x"].numpy(), d["y"].numpy(), d["classes"], d["features"]


def _as_float(values: list[str]) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in values], dtype=np.float32)
    except ValueError:
        return None


def read_csv(path: str, target: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Numeric columns as they are, text columns one-hot; the target column becomes class ids."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DlrunError(f"data.path: no CSV file at {p}")
    with p.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DlrunError(f"data.path: {p} has no data rows (a header row and samples are needed)")
    header, body = rows[0], rows[1:]
    if target not in header:
        raise DlrunError(f"data.target: no column {target!r} in {p.name}; columns: {', '.join(header)}")
    if any(len(r) != len(header) for r in body):
        bad = next(i for i, r in enumerate(body) if len(r) != len(header))
        raise DlrunError(f"data.path: row {bad + 2} of {p.name} has {len(body[bad])} fields, the header has {len(header)}")
    cols = {h: [r[i].strip() for r in body] for i, h in enumerate(header)}
    for h, vals in cols.items():
        if "" in vals:
            raise DlrunError(f"data.path: column {h!r} of {p.name} has empty values (row {vals.index('') + 2}); fill or drop them")
    labels = cols.pop(target)
    class_names = sorted(set(labels), key=lambda v: (_as_float([v]) is None, float(v) if _as_float([v]) is not None else 0.0, v))
    y = np.array([class_names.index(v) for v in labels], dtype=np.int64)
    feats, names = [], []
    for h, vals in cols.items():
        num = _as_float(vals)
        if num is not None:
            feats.append(num)
            names.append(h)
        else:  # text: one column per category
            for cat in sorted(set(vals)):
                feats.append(np.array([v == cat for v in vals], dtype=np.float32))
                names.append(f"{h}={cat}")
    if not feats:
        raise DlrunError(f"data.path: {p.name} has no feature columns besides {target!r}")
    return np.stack(feats, axis=1), y, class_names, names


def build_tabular(*, name: str = "wine", path: str | None = None, target: str | None = None,
                  test_fraction: float = 0.15, root: str = "data", **knobs) -> DataBundle:
    check_knobs(fraction=knobs.get("fraction", 1.0), val_fraction=knobs.get("val_fraction", 0.15),
                batch_size=knobs.get("batch_size", 64), num_workers=knobs.get("num_workers", 0),
                test_fraction=test_fraction)
    if name == "csv":
        if not path or not target:
            raise DlrunError("data.name=csv needs data.path=FILE.csv and data.target=COLUMN")
        x, y, class_names, features = read_csv(path, target)
    elif name in BUNDLED:
        x, y, class_names, features = _bundled(name, root)
    else:
        raise DlrunError(f"data.name must be one of {', '.join(BUNDLED)}, csv; got {name!r}")
    if len(class_names) < 2:
        raise DlrunError(f"data.target: column {target!r} has a single class; nothing to classify")
    bundle = from_tensors(f"tabular:{name}", torch.from_numpy(x), y, class_names, "tabular",
                          test_fraction=test_fraction, **knobs)
    bundle.extra["features"] = features
    return bundle
