"""The run's pictures hold what they claim: each sample in its own panel under its label, the
confusion counts as colours, the curves' lines inside their charts."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dlrunner.reporting import plots
def pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB")).astype(int)


def test_image_samples_put_each_sample_in_its_panel(tmp_path):
    n = 12
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 8, 8) / (n - 1)  # sample i: grey i/11
    y = torch.arange(n) % 3
    pic = plots.samples(x, y, ["zero", "one", "two"], "image", tmp_path / "s.png")
    assert pic.titles == [["zero", "one", "two"][i % 3] for i in range(n)]
    px = pixels(tmp_path / "s.png")
    for i, (left, top, right, bottom) in enumerate(pic.boxes):
        panel = px[top:bottom, left:right]
        assert panel.shape[:2] == (64, 64)  # 8x8 upscaled x8, nearest
        assert np.abs(panel - round(255 * i / (n - 1))).max() <= 1


def test_rgb_samples_keep_their_colours(tmp_path):
    x = torch.zeros(2, 3, 16, 16)
    x[0, 0], x[1, 2] = 1.0, 1.0  # a red and a blue image, already in [0, 1]
    pic = plots.samples(x, torch.tensor([0, 1]), ["r", "b"], "image", tmp_path / "s.png")
    px = pixels(tmp_path / "s.png")
    (l0, t0, r0, b0), (l1, t1, r1, b1) = pic.boxes
    assert (px[t0:b0, l0:r0] == [255, 0, 0]).all() and (px[t1:b1, l1:r1] == [0, 0, 255]).all()


def test_tabular_samples_are_a_heatmap_row_per_sample(tmp_path):
    x = torch.tensor([[2.0, -2.0], [0.0, 0.0]])
    pic = plots.samples(x, torch.tensor([1, 0]), ["neg", "pos"], "tabular", tmp_path / "t.png")
    assert pic.titles == ["pos", "neg"]
    px = pixels(tmp_path / "t.png")
    left, top, right, bottom = pic.boxes[0]
    hot, cold = px[top + 6, left + 6], px[top + 6, right - 6]
    assert hot[0] > 150 > hot[2] and cold[2] > 150 > cold[0]  # red for high, blue for low
    left, top, right, _ = pic.boxes[1]
    assert (px[top + 6, left + 6] == 255).all()  # zero is white


def test_confusion_colours_follow_the_row_share(tmp_path):
    m = torch.tensor([[9, 1], [0, 5]])
    pic = plots.confusion(m, ["a", "b"], tmp_path / "c.png")
    px = pixels(tmp_path / "c.png")
    left, top, right, bottom = pic.boxes[0]
    cell = (right - left) // 2

    def corner(t, p):  # a cell's corner: its fill colour, away from the count's text
        return px[top + t * cell + 3, left + p * cell + 3]
    assert corner(0, 0).sum() < corner(0, 1).sum() < corner(1, 0).sum()  # 0.9 darker than 0.1 than 0 (white)
    assert (corner(1, 0) == 255).all()
    assert corner(1, 1).sum() < corner(0, 0).sum()  # 5/5 is the darkest


def test_curves_draw_both_splits_inside_their_charts(tmp_path):
    hist = [{"epoch": e, "train/loss": 1 / e, "val/loss": 1.2 / e, "train/acc": 1 - 1 / (e + 1),
             "val/acc": 0.9 - 1 / (e + 2), "lr": 1e-3} for e in range(1, 6)]
    pic = plots.curves(hist, tmp_path / "c.png")
    px = pixels(tmp_path / "c.png")
    for left, top, right, bottom in pic.boxes:
        chart = px[top:bottom, left:right]
        blue = ((chart[..., 2] > 150) & (chart[..., 0] < 80)).sum()  # train: solid blue
        orange = ((chart[..., 0] > 200) & (chart[..., 1] > 90) & (chart[..., 2] < 60)).sum()  # val: dashed orange
        assert blue > 100 and orange > 50


def test_pictures_do_not_import_matplotlib(tmp_path):
    code = ("import sys, torch; from dlrunner.reporting import plots; "
            "plots.samples(torch.rand(4, 1, 8, 8), torch.arange(4), list('abcd'), 'image', sys.argv[1] + '/s.png'); "
            "plots.curves([{'epoch': 1, 'train/loss': 1.0, 'lr': 0.1}], sys.argv[1] + '/c.png'); "
            "plots.confusion([[1, 0], [0, 1]], ['a', 'b'], sys.argv[1] + '/m.png'); "
            "assert 'matplotlib' not in sys.modules and 'torchvision' not in sys.modules, 'imported'")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("modality,shape", [("image", (3, 1, 28, 28)), ("sequence", (3, 2, 40))])
def test_top_losses_titles_and_panels(tmp_path, modality, shape):
    rows = [{"true": 0, "pred": 1, "prob": 0.9, "loss": 3.0 - i} for i in range(3)]
    pic = plots.top_losses(torch.rand(*shape), rows, ["cat", "dog"], modality, tmp_path / "t.png")
    assert pic.titles == [f"cat/dog/0.90/{3.0 - i:.2f}" for i in range(3)] and len(pic.boxes) == 3
    px = pixels(tmp_path / "t.png")
    for left, top, right, bottom in pic.boxes:
        assert (px[top:bottom, left:right] != 255).any()
