"""Every data config: offline ones load with sane splits, online ones fail clearly offline."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dlrunner.build import build_data
from dlrunner.cli import CONF_DIR
from dlrunner.data.batches import make_batches
from dlrunner.data.core import Split
from dlrunner.errors import DlrunError

DATA = sorted(p.stem for p in (Path(CONF_DIR) / "data").glob("*.yaml"))
ONLINE = ["mnist", "fashion_mnist", "cifar10"]
MODALITY = {"digits": "image", "mnist1d": "sequence", "tabular": "tabular", "folder": "image"}


def load_cfg(group_file: str, **over):
    cfg = OmegaConf.load(Path(CONF_DIR) / "data" / f"{group_file}.yaml")
    cfg.pop("defaults", None)  # the defaults list (mnist1d's model) is Hydra's, not a builder argument
    for k, v in over.items():
        cfg[k] = v
    return cfg


@pytest.fixture
def image_folder(tmp_path):
    """Three classes of 8 tiny PNGs each, told apart by brightness."""
    from PIL import Image

    root = tmp_path / "imgs"
    for c, level in enumerate((30, 120, 220)):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(8):
            arr = np.full((12, 10, 3), level + i, dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{i}.png")
    return root


def offline_kwargs(name, tmp_path, image_folder):
    if name == "mnist1d":
        return {"root": str(tmp_path / "data")}
    if name == "folder":
        return {"path": str(image_folder), "size": 16, "num_workers": 0, "val_fraction": 0.25, "test_fraction": 0.25}
    return {}


@pytest.mark.parametrize("name", [n for n in DATA if n not in ONLINE])
def test_offline_data_loads(name, tmp_path, image_folder):
    b = build_data(load_cfg(name, **offline_kwargs(name, tmp_path, image_folder)), print)
    assert b.modality == MODALITY[name]
    sizes = b.sizes()
    assert min(sizes.values()) > 0
    x, y = next(make_batches(b.train, 16, shuffle=False, seed=0, device=torch.device("cpu")).iterate(0))[1]
    assert tuple(x.shape[1:]) == b.in_shape and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < b.num_classes
    if isinstance(b.train, Split):  # normalized with train statistics: mean 0, std 1 per channel
        dims = (0,) if b.modality == "tabular" else tuple(d for d in range(b.train.x.dim()) if d != 1)
        assert torch.allclose(b.train.x.mean(dims), torch.zeros(1), atol=1e-4)
        assert torch.allclose(b.train.x.std(dims), torch.ones(1), atol=1e-3)


def _rows(split: Split) -> set[bytes]:
    return {r.numpy().tobytes() for r in split.x.flatten(1)}


def test_digits_splits_are_disjoint_seeded_and_sized():
    a = build_data(load_cfg("digits"), print)
    assert sum(a.sizes().values()) == 1797 and a.in_shape == (1, 28, 28)
    assert not _rows(a.train) & _rows(a.val) and not _rows(a.train) & _rows(a.test)
    b = build_data(load_cfg("digits"), print)
    assert torch.equal(a.val.y, b.val.y)  # same split_seed, same split
    c = build_data(load_cfg("digits", split_seed=1), print)
    assert not torch.equal(a.val.y, c.val.y)


def _paths(split) -> set[str]:
    return {path for path, _ in split.samples}


@pytest.mark.parametrize("name", ["digits", "mnist1d", "folder"])
def test_val_seed_deals_train_and_val_again_and_leaves_the_test_split(name, tmp_path, image_folder):
    """data.val_seed (the sweep's confirmation re-runs): other validation samples from the same
    non-test pool, the same sizes, the test split untouched; null is split_seed's own split."""
    kw = {**offline_kwargs(name, tmp_path, image_folder), "normalize": False}  # raw rows: the stats follow train
    a = build_data(load_cfg(name, **kw), print)
    same = build_data(load_cfg(name, **kw, val_seed=None), print)
    b = build_data(load_cfg(name, **kw, val_seed=1), print)
    rows = _paths if name == "folder" else _rows
    assert rows(same.val) == rows(a.val) and rows(same.test) == rows(a.test)
    assert rows(b.test) == rows(a.test)  # the test split stays put
    assert rows(b.val) != rows(a.val) and len(b.val) == len(a.val) and len(b.train) == len(a.train)
    assert rows(b.train) | rows(b.val) == rows(a.train) | rows(a.val)  # the same pool, dealt again
    assert not rows(b.train) & rows(b.val) and not rows(b.val) & rows(b.test)
    if name == "digits":  # another split_seed also moves the test split: what val_seed avoids
        assert _rows(build_data(load_cfg(name, **kw, split_seed=1), print).test) != _rows(a.test)


def test_fraction_and_classes():
    full = build_data(load_cfg("digits"), print)
    small = build_data(load_cfg("digits", fraction=0.25), print)
    for k in ("train", "val", "test"):
        assert abs(small.sizes()[k] - 0.25 * full.sizes()[k]) <= 1
    three = build_data(load_cfg("digits", classes=[3, 5, 7]), print)
    assert three.class_names == ["3", "5", "7"] and three.num_classes == 3
    assert set(three.train.y.tolist()) == {0, 1, 2}
    n37 = int(((full.train.y == 3) | (full.train.y == 5) | (full.train.y == 7)).sum())
    assert len(three.train) == n37


@pytest.mark.parametrize("over, words", [
    ({"fraction": 0.0}, "data.fraction"), ({"fraction": 1.5}, "data.fraction"),
    ({"classes": [0, 12]}, "unknown class id 12"), ({"val_fraction": 1.0}, "data.val_fraction"),
    ({"batch_size": 0}, "data.batch_size"),
])
def test_bad_knobs_fail_with_one_line(over, words):
    with pytest.raises(DlrunError, match=words) as e:
        build_data(load_cfg("digits", **over), print)
    assert "\n" not in str(e.value)


def test_tabular_csv(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,colour,label\n" + "".join(
        f"{i},{i % 3},{'red' if i % 2 else 'blue'},{'yes' if i % 2 else 'no'}\n" for i in range(40)))
    b = build_data(load_cfg("tabular", name="csv", path=str(csv), target="label"), print)
    assert b.class_names == ["no", "yes"] and b.in_shape == (4,)  # a, b, colour=blue, colour=red
    assert b.extra["features"] == ["a", "b", "colour=blue", "colour=red"]
    with pytest.raises(DlrunError, match="no column 'target'.*columns: a, b, colour, label"):
        build_data(load_cfg("tabular", name="csv", path=str(csv), target="target"), print)
    with pytest.raises(DlrunError, match="no CSV file"):
        build_data(load_cfg("tabular", name="csv", path=str(tmp_path / "nope.csv"), target="label"), print)


@pytest.mark.parametrize("name", ONLINE)
def test_online_data_fails_clearly_when_files_are_missing(name, tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(DlrunError) as e:
        build_data(load_cfg(name, root=str(root), download=False), print)
    msg = str(e.value)
    assert "\n" not in msg and f"data.root={root.resolve()}" in msg
    assert ("train-images-idx3-ubyte" if "mnist" in name else "data_batch_1") in msg


def test_online_data_offline_download_fails_clearly(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DlrunError, match="download failed"):
        build_data(load_cfg("mnist", root=str(tmp_path / "d"), download=True), print)


def test_folder_split_folders_and_classes(tmp_path, image_folder):
    b = build_data(load_cfg("folder", **offline_kwargs("folder", tmp_path, image_folder), classes=[0, 2]), print)
    assert b.class_names == ["class0", "class2"] and sum(b.sizes().values()) == 16
    x, y = next(make_batches(b.train, 4, shuffle=True, seed=0, device=torch.device("cpu")).iterate(0))[1]
    assert x.shape[1:] == (3, 16, 16)
    # dark class 0 and bright class 2 stay apart after normalization
    assert (x.mean((1, 2, 3))[y == 0] < 0).all() and (x.mean((1, 2, 3))[y == 1] > 0).all()


def test_user_data_target_returning_arrays():
    node = OmegaConf.create({"_target_": "tests.userpkg.blobs", "fraction": 1.0, "val_fraction": 0.2,
                             "test_fraction": 0.2, "batch_size": 8, "num_workers": 0, "split_seed": 0,
                             "normalize": True, "augment": False, "classes": None})
    b = build_data(node, print)
    assert b.modality == "tabular" and b.num_classes == 3 and sum(b.sizes().values()) == 90
