"""torchvision's MNIST, Fashion-MNIST and CIFAR-10 under data.root (downloaded there when online)."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import torch

from dlrunner.data.core import DataBundle, check_knobs, from_tensors
from dlrunner.errors import DlrunError

_MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
# config name -> (torchvision class, folder under root, files it needs there)
SOURCES = {
    "mnist": ("MNIST", "MNIST/raw", _MNIST_FILES),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", _MNIST_FILES),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
}


def _open(name: str, root: str, download: bool):
    """Both torchvision splits, or one clear line naming the files and the folder they go in."""
    import torchvision.datasets as tvd

    cls_name, sub, files = SOURCES[name]
    cls = getattr(tvd, cls_name)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine should fail in seconds, not hang
    try:
        return cls(root, train=True, download=download), cls(root, train=False, download=download)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError variants
        where = Path(root).expanduser().resolve() / sub
        how = "the download failed (offline?)" if download else "download is off"
        raise DlrunError(f"data={name}: files not found under data.root={Path(root).expanduser().resolve()} and {how}; "
                         f"needs {', '.join(files)} in {where} ({type(e).__name__}); "
                         f"run once online or set data.root=FOLDER") from None
    finally:
        socket.setdefaulttimeout(old)


def _tensors(ds) -> tuple[torch.Tensor, np.ndarray]:
    data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
    x = data.float() / 255.0
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    return x.contiguous(), np.asarray(ds.targets, dtype=np.int64)


def _build(name: str, root: str, download: bool, flip: bool, knobs: dict) -> DataBundle:
    check_knobs(fraction=knobs.get("fraction", 1.0), val_fraction=knobs.get("val_fraction", 0.15),
                batch_size=knobs.get("batch_size", 64), num_workers=knobs.get("num_workers", 0))
    train, test = _open(name, root, download)
    x, y = _tensors(train)
    x_test, y_test = _tensors(test)
    return from_tensors(name, x, y, [str(c) for c in train.classes], "image", x_test=x_test, y_test=y_test,
                        flip=flip, **knobs)


def build_mnist(*, root: str = "data", download: bool = True, flip: bool = False, **knobs) -> DataBundle:
    return _build("mnist", root, download, flip, knobs)


def build_fashion_mnist(*, root: str = "data", download: bool = True, flip: bool = False, **knobs) -> DataBundle:
    return _build("fashion_mnist", root, download, flip, knobs)


def build_cifar10(*, root: str = "data", download: bool = True, flip: bool = True, **knobs) -> DataBundle:
    return _build("cifar10", root, download, flip, knobs)
