"""Pictures of a run: learning curves, the inputs exactly as the net receives them, the confusion
matrix and the highest losses. Each is one PIL image (dlrunner.reporting.canvas), drawn in milliseconds."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dlrunner.reporting import canvas
from dlrunner.reporting.canvas import BLACK, GREY, Box, Chart, Series

HEADER = 26  # px above the panels for the picture's title
TITLE = 16  # px above each panel for its own title


@dataclass
class Picture:
    """A written picture and where its panels are (tests read the pixels inside `boxes`)."""

    path: Path
    titles: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)


def _plt():
    """matplotlib's pyplot for the occasional figures (lr_finder.png, importance.png, compare.png)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _unit_images(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """(B, C, H, W) -> (B, 3, H, W) in [0, 1]: grey images on the batch's range, RGB ones stretched
    per image when not already in [0, 1]."""
    if x.shape[1] == 3:
        if float(x.min()) < 0 or float(x.max()) > 1:
            flat = x.flatten(1)
            mn, mx = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
            x = (x - mn) / (mx - mn + 1e-12)
        return x.clamp(0, 1)
    grey = ((x[:, :1] - lo) / ((hi - lo) or 1.0)).clamp(0, 1)
    return grey.expand(-1, 3, -1, -1)


def _image_grid(x: torch.Tensor, titles: list[str], cols: int, lo: float, hi: float,
                header: str) -> tuple:
    """Tiles of images, each under its title, on one canvas: nearest-upscaled so that small images
    stay sharp. (torchvision's make_grid would do the tiling, but importing torchvision costs more
    than the whole picture on a job that does not otherwise use it.)"""
    side = max(x.shape[-2:])
    scale = max(1, math.ceil(64 / side)) if side < 64 else 1
    img = _unit_images(x, lo, hi)
    if scale > 1:
        img = F.interpolate(img, scale_factor=scale, mode="nearest")
    elif side > 128:
        img = F.interpolate(img, size=(128 * img.shape[-2] // side, 128 * img.shape[-1] // side),
                            mode="bilinear", antialias=True, align_corners=False)
    h, w = img.shape[-2:]
    cell_w, pad = max(w, 72), 6  # room for a title wider than a small image
    rows = max(1, math.ceil(len(img) / cols))
    grid = torch.ones(3, pad + rows * (TITLE + h + pad), pad + cols * (cell_w + pad))
    boxes = []
    for i in range(len(img)):
        r, c = divmod(i, cols)
        left, top = pad + c * (cell_w + pad) + (cell_w - w) // 2, pad + r * (TITLE + h + pad) + TITLE
        grid[:, top:top + h, left:left + w] = img[i]
        boxes.append((left, top + HEADER, left + w, top + HEADER + h))
    arr = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    from PIL import Image

    tiles = Image.fromarray(arr)
    pic, draw = canvas.blank(max(tiles.width, 300), tiles.height + HEADER)
    pic.paste(tiles, (0, HEADER))
    canvas.centered(draw, (pic.width / 2, HEADER / 2), header, 11)
    for (left, top, right, _), t in zip(boxes, titles):
        canvas.centered(draw, ((left + right) / 2, top - TITLE / 2), t, 10)
    return pic, draw, boxes


def _sequence_grid(x: torch.Tensor, titles: list[str], cols: int, lo: float, hi: float,
                   header: str) -> tuple:
    """One small line chart per sample (a line per channel) on a shared y range."""
    cw, ch, pad = 180, 110, 8
    rows = max(1, math.ceil(len(x) / cols))
    pic, draw = canvas.blank(cols * (cw + pad) + pad, HEADER + rows * (ch + TITLE + pad) + pad)
    canvas.centered(draw, (pic.width / 2, HEADER / 2), header, 11)
    boxes = []
    steps = list(range(x.shape[-1]))
    for i, t in enumerate(titles):
        r, c = divmod(i, cols)
        left, top = pad + c * (cw + pad), HEADER + pad + r * (ch + TITLE + pad)
        box = (left + 4, top + TITLE, left + cw - 4, top + TITLE + ch)
        canvas.centered(draw, (left + cw / 2, top + TITLE / 2), t, 10)
        series = [Series(steps, x[i, k].tolist(), color=canvas.PALETTE[k % 6], markers=False)
                  for k in range(x.shape[1])]
        canvas._plot(draw, box, series, (0, max(1, len(steps) - 1)), (lo, hi))
        draw.rectangle(box, outline=GREY)
        boxes.append(box)
    return pic, draw, boxes


def _panels(x: torch.Tensor, titles: list[str], modality: str, cols: int, header: str) -> Picture:
    lo, hi = float(x.min()), float(x.max())
    grid = _image_grid if modality == "image" else _sequence_grid
    pic, _, boxes = grid(x, titles, cols, lo, hi, header)
    return Picture(pic, titles, boxes)


def samples(x: torch.Tensor, y: torch.Tensor, class_names: list[str], modality: str, path: str | Path,
            limit: int = 32) -> Picture:
    """A grid of one training batch with labels: the tensors the model receives (normalized,
    augmented), so a wrong crop, scale or label shows up here first."""
    x, y = x[:limit].detach().float().cpu(), y[:limit].cpu()
    titles = [class_names[int(c)] for c in y]
    header = f"inputs as the net sees them: shape {tuple(x.shape[1:])}, range [{float(x.min()):.2f}, {float(x.max()):.2f}]"
    if modality == "tabular":
        return _heatmap(x, titles, header, path)
    pic = _panels(x, titles, modality, 8, header)
    return Picture(canvas.save(pic.path, path), pic.titles, pic.boxes)


def _heatmap(x: torch.Tensor, row_labels: list[str], header: str, path: str | Path) -> Picture:
    """Tabular samples: one row per sample, one cell per feature, blue (low) to red (high)."""
    cell, left = 12, 90
    n, f = x.shape
    pic, draw = canvas.blank(max(360, left + f * cell + 20), HEADER + n * cell + 30)
    canvas.centered(draw, (pic.width / 2, HEADER / 2), header, 11)
    scale = float(x.abs().max()) or 1.0
    boxes = []
    for i in range(n):
        top = HEADER + i * cell
        draw.text((left - 6, top + cell / 2), row_labels[i][:14], fill=BLACK, font=canvas.font(9), anchor="rm")
        for j in range(f):
            draw.rectangle([left + j * cell, top, left + (j + 1) * cell - 1, top + cell - 1],
                           fill=canvas.diverging(float(x[i, j]) / scale))
        boxes.append((left, top, left + f * cell, top + cell))
    canvas.centered(draw, (left + f * cell / 2, HEADER + n * cell + 15), "feature", 10)
    return Picture(canvas.save(pic, path), row_labels, boxes)


def curves(history: list[dict], path: str | Path) -> Picture:
    """Train and val loss and accuracy per epoch; the LR on a second axis of the loss chart."""
    epochs = [float(r["epoch"]) for r in history]
    pic, draw = canvas.blank(1000, 400)
    charts = []
    for i, metric in enumerate(("loss", "acc")):
        series = [Series(epochs, [float(r.get(f"{split}/{metric}", float("nan"))) for r in history],
                         f"{split}/{metric}", canvas.PALETTE[k], dashed=split == "val")
                  for k, split in enumerate(("train", "val")) if any(f"{split}/{metric}" in r for r in history)]
        left = 70 + i * 500
        c = Chart((left, 20, left + 360, 340), series, "epoch", metric)
        if metric == "loss":
            c.right, c.right_label = [Series(epochs, [float(r["lr"]) for r in history], color=GREY,
                                             markers=False)], "lr"
        canvas.chart(draw, c)
        charts.append(c.box)
    return Picture(canvas.save(pic, path), ["loss", "acc"], charts)


def confusion(matrix, class_names: list[str], path: str | Path) -> Picture:
    """Confusion matrix (rows: true class, columns: predicted): colour = share of the row, so a
    rare class's mistakes show as clearly as a common one's; the cells carry the counts."""
    m = torch.as_tensor(matrix).long().cpu()
    k = len(class_names)
    share = m.double() / m.sum(1, keepdim=True).clamp(min=1)
    cell = int(min(48, max(10, 640 // max(k, 1))))
    label_w = min(120, 12 + 7 * max((len(n) for n in class_names), default=1))
    left, top = label_w + 30, 40
    pic, draw = canvas.blank(max(560, left + k * cell + 30), top + k * cell + label_w + 30)
    acc = float(m.diag().sum()) / max(1, int(m.sum()))
    canvas.centered(draw, (pic.width / 2, 18), f"confusion matrix: {int(m.sum())} samples, accuracy {acc:.3f} "
                    "(colour: share of the true class)", 11)
    every = 1 if k <= 50 else max(1, k // 25)
    fs = 10 if k <= 20 else 7
    for t in range(k):
        for p in range(k):
            box = [left + p * cell, top + t * cell, left + (p + 1) * cell - 1, top + (t + 1) * cell - 1]
            draw.rectangle(box, fill=canvas.colormap(float(share[t, p])))
            if k <= 30 and m[t, p]:  # beyond that the numbers would not fit in the cells
                canvas.centered(draw, (box[0] + cell / 2, box[1] + cell / 2), str(int(m[t, p])), fs,
                                canvas.WHITE if share[t, p] > 0.5 else BLACK)
    for i in range(0, k, every):
        name = class_names[i][:16]
        draw.text((left - 6, top + (i + 0.5) * cell), name, fill=BLACK, font=canvas.font(fs), anchor="rm")
        draw.text((left + (i + 0.5) * cell, top + k * cell + 6), name, fill=BLACK, font=canvas.font(fs),
                  anchor="mt" if k <= 10 else "lt")
    draw.rectangle([left, top, left + k * cell, top + k * cell], outline=BLACK)
    canvas.centered(draw, (left + k * cell / 2, top + k * cell + label_w // 2 + 20), "predicted", 11)
    draw.text((12, top + k * cell / 2), "true", fill=BLACK, font=canvas.font(11), anchor="lm")
    return Picture(canvas.save(pic, path), list(class_names), [(left, top, left + k * cell, top + k * cell)])


def _loss_title(row: dict, class_names: list[str]) -> str:
    return f"{class_names[row['true']]}/{class_names[row['pred']]}/{row['prob']:.2f}/{row['loss']:.2f}"


def top_losses(x: torch.Tensor, rows: list[dict], class_names: list[str], modality: str, path: str | Path,
               feature_names: list[str] | None = None) -> Picture:
    """The samples with the highest loss, each titled true/pred/prob/loss (prob: of the predicted
    class). `x`: their inputs before normalization, in the order of `rows`; images are drawn as
    images, sequences as line plots, tabular samples as a table of feature values."""
    x = x.detach().float().cpu()
    titles = [_loss_title(r, class_names) for r in rows]
    header = "highest losses (title: true/pred/prob/loss; prob of the predicted class)"
    if modality == "tabular":
        return _table(x, titles, list(feature_names or [f"f{i}" for i in range(x.shape[1])]), header, path)
    pic = _panels(x, titles, modality, 4, header)
    return Picture(canvas.save(pic.path, path), pic.titles, pic.boxes)


def _table(x: torch.Tensor, titles: list[str], features: list[str], header: str, path: str | Path) -> Picture:
    """Tabular samples as columns of feature values under their titles (at most 40 features)."""
    feats = features[:40]
    row_h, label_w, col_w = 15, 150, 104
    pic, draw = canvas.blank(label_w + col_w * len(titles) + 10, HEADER + row_h * (len(feats) + 1) + 10)
    canvas.centered(draw, (pic.width / 2, HEADER / 2), header, 11)
    boxes = []
    for c, t in enumerate(titles):
        left = label_w + c * col_w
        canvas.centered(draw, (left + col_w / 2, HEADER + row_h / 2), t, 8)
        for j in range(len(feats)):
            canvas.centered(draw, (left + col_w / 2, HEADER + row_h * (j + 1.5)), f"{float(x[c, j]):.3g}", 9)
        boxes.append((left, HEADER, left + col_w, HEADER + row_h * (len(feats) + 1)))
    for j, name in enumerate(feats):
        draw.text((label_w - 6, HEADER + row_h * (j + 1.5)), name[:24], fill=BLACK, font=canvas.font(9), anchor="rm")
    for j in range(len(feats) + 2):
        draw.line([(label_w, HEADER + row_h * j), (pic.width - 10, HEADER + row_h * j)], fill=canvas.LIGHT)
    return Picture(canvas.save(pic, path), titles, boxes)
