"""data.on_device: where batches are cut (device tensors, host tensors, or DataLoader workers)."""
from __future__ import annotations

import csv

import pytest
import torch
from torch.utils.data import TensorDataset

from dlrunner.data.batches import HostBatches, LoaderBatches, TensorBatches, make_batches, materialize, place
from dlrunner.data.core import Split

CPU = torch.device("cpu")


def split(n=50):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g))


def batches_of(it, epoch):
    return [(x.clone(), y.clone()) for _, (x, y) in it.iterate(epoch)]


def test_auto_placement_by_size(monkeypatch):
    s = split()  # 50 * 16 * 4 + 50 * 8 bytes = 3600
    assert place("auto", [s, s], CPU) == (True, "in memory")  # on a CPU the host is the device
    assert place("auto", [s, TensorDataset(s.x, s.y)], CPU)[0] is False  # streamed stays streamed
    assert place(False, [s], CPU) == (False, "data.on_device=false")
    assert place(True, [TensorDataset(s.x, s.y)], CPU)[0] is True
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10_000, 20_000))
    assert place("auto", [s], cuda)[0] is True  # 3600 <= a quarter of 20000 and half of what is free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10_000, 12_000))
    on, why = place("auto", [s], cuda)  # 3600 > 3000: a quarter of the device
    assert on is False and "kept on the host, pinned" in why


def test_every_path_gives_the_same_batches():
    s = split()
    ref = batches_of(TensorBatches(s, 16, shuffle=True, seed=3, device=CPU), epoch=2)
    for it in (HostBatches(s, 16, shuffle=True, seed=3, device=CPU),
               LoaderBatches(TensorDataset(s.x, s.y), 16, shuffle=True, seed=3, device=CPU),
               make_batches(TensorDataset(s.x, s.y), 16, shuffle=True, seed=3, device=CPU, on_device=True)):
        got = batches_of(it, epoch=2)
        assert len(got) == len(ref) == 4  # 16, 16, 16, 2
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, ref))
    assert isinstance(make_batches(s, 16, shuffle=False, seed=0, device=CPU, on_device=False), HostBatches)
    m = materialize(TensorDataset(s.x, s.y))
    assert torch.equal(m.x, s.x) and torch.equal(m.y, s.y) and m.y.dtype == torch.int64


@pytest.mark.slow  # two `dlrun` processes end to end
def test_an_image_folder_read_into_memory_trains_like_the_stream(dlrun, tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for c, level in enumerate((30, 120, 220)):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(10):
            Image.fromarray(torch.full((12, 10, 3), level + i, dtype=torch.uint8).numpy()).save(root / f"c{c}" / f"{i}.png")
    common = ("data=folder", f"data.path={root}", "data.size=16", "data.num_workers=0", "model=mlp", "epochs=2",
              "data.batch_size=4")
    runs = {}
    for on in ("true", "false"):
        r = dlrun(*common, f"data.on_device={on}")
        assert r.returncode == 0, r.stderr
        (run,) = [d for d in r.run_dirs() if d not in runs.values()]
        runs[on] = run
        assert r.summary(run)["data_placement"]["on_device"] is (on == "true")
    rows = {k: list(csv.DictReader((v / "metrics.csv").open())) for k, v in runs.items()}
    keys = ["train/loss", "val/loss", "val/acc"]
    assert [[r[k] for k in keys] for r in rows["true"]] == [[r[k] for k in keys] for r in rows["false"]]


def test_fast_paths_on_cuda_only_where_they_pay():
    from torch import nn

    from dlrunner.build import fast_paths
    from dlrunner.models.lenet import build_lenet

    conv = build_lenet((1, 28, 28), 10)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert fast_paths(conv, "image", "bf16", "cuda", set(), False) == (True, True)
    assert fast_paths(conv, "image", None, "cuda", set(), False) == (False, True)  # fp32: NHWC does not pay
    assert fast_paths(mlp, "image", "bf16", "cuda", set(), False) == (False, True)  # no convolution
    assert fast_paths(conv, "image", "bf16", "cuda", {"channels_last"}, False)[0] is False  # the trick does it
    assert fast_paths(conv, "image", "bf16", "cuda", {"progressive_resizing"}, False) == (True, False)  # shapes change
    assert fast_paths(conv, "image", "bf16", "cuda", set(), True)[1] is False  # reproducible kernels
    assert fast_paths(conv, "image", "bf16", "cpu", set(), False) == (False, False)
