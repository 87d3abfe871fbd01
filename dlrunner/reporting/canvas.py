"""Drawing primitives for a run's pictures: text, line charts, heat maps and tiled panels on a PIL
image. Every run draws its pictures, so they must cost milliseconds, not the seconds that importing
matplotlib and laying out dozens of axes takes (matplotlib stays for the occasional figures:
lr_finder.png, importance.png, compare.png)."""
from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]  # (left, top, right, bottom) in pixels
Color = tuple[int, int, int]

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (128, 128, 128), (225, 225, 225)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


@functools.lru_cache(maxsize=16)
def font(size: int = 12) -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's package data when it is installed (found without importing
    matplotlib), else PIL's own scalable default."""
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def text_size(draw: ImageDraw.ImageDraw, text: str, size: int) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font(size))
    return right - left, bottom - top


def centered(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int = 12,
             fill: Color = BLACK) -> None:
    draw.text(xy, text, fill=fill, font=font(size), anchor="mm")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round values spanning [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def tick_label(v: float) -> str:
    return f"{v:.0e}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5) else f"{v:g}"


@dataclass
class Series:
    """One line of a chart: y values at x positions (NaN leaves a gap), drawn solid or dashed."""

    x: list[float]
    y: list[float]
    label: str = ""
    color: Color = PALETTE[0]
    dashed: bool = False
    markers: bool = True


@dataclass
class Chart:
    """A line chart in `box`: its series on the left axis, `right` (optional) on a second axis."""

    box: Box
    series: list[Series]
    xlabel: str = ""
    ylabel: str = ""
    right: list[Series] = field(default_factory=list)
    right_label: str = ""


def _limits(series: list[Series]) -> tuple[float, float]:
    ys = [v for s in series for v in s.y if math.isfinite(v)]
    if not ys:
        return 0.0, 1.0
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def _polyline(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float] | None], s: Series) -> None:
    runs, cur = [], []
    for p in pts + [None]:
        if p is None:
            if cur:
                runs.append(cur)
            cur = []
        else:
            cur.append(p)
    for run in runs:
        for a, b in zip(run, run[1:]):
            if not s.dashed:
                draw.line([a, b], fill=s.color, width=2)
                continue
            length = math.dist(a, b)
            for t in range(0, max(1, int(length)), 8):  # 5 px dashes, 3 px gaps
                t0, t1 = t / length if length else 0, min(1.0, (t + 5) / length) if length else 1
                draw.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                           (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)], fill=s.color, width=2)
        if s.markers:
            for x, y in run:
                draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=s.color)


def _plot(draw: ImageDraw.ImageDraw, box: Box, series: list[Series], xlim: tuple[float, float],
          ylim: tuple[float, float]) -> None:
    (l, t, r, b), (x0, x1), (y0, y1) = box, xlim, ylim

    def to_px(x: float, y: float) -> tuple[float, float] | None:
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        return l + (x - x0) / ((x1 - x0) or 1) * (r - l), b - (y - y0) / ((y1 - y0) or 1) * (b - t)

    for s in series:
        _polyline(draw, [to_px(x, y) for x, y in zip(s.x, s.y)], s)


def chart(draw: ImageDraw.ImageDraw, c: Chart) -> None:
    """Axes with round ticks and a grid, the lines, a legend in the upper right."""
    l, t, r, b = c.box
    xs = [v for s in c.series + c.right for v in s.x]
    xlim = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if xlim[0] == xlim[1]:
        xlim = (xlim[0] - 0.5, xlim[1] + 0.5)
    ylim = _limits(c.series)
    for v in nice_ticks(*ylim):
        y = b - (v - ylim[0]) / (ylim[1] - ylim[0]) * (b - t)
        draw.line([(l, y), (r, y)], fill=LIGHT)
        draw.text((l - 4, y), tick_label(v), fill=BLACK, font=font(10), anchor="rm")
    xticks = [v for v in nice_ticks(*xlim, n=8) if v == int(v)] or nice_ticks(*xlim)
    for v in xticks:
        x = l + (v - xlim[0]) / (xlim[1] - xlim[0]) * (r - l)
        draw.line([(x, b), (x, b + 3)], fill=BLACK)
        draw.text((x, b + 5), tick_label(v), fill=BLACK, font=font(10), anchor="mt")
    if c.right:
        rlim = _limits(c.right)
        for v in nice_ticks(*rlim, n=4):
            y = b - (v - rlim[0]) / (rlim[1] - rlim[0]) * (b - t)
            draw.text((r + 4, y), tick_label(v), fill=GREY, font=font(10), anchor="lm")
        _plot(draw, c.box, c.right, xlim, rlim)
        draw.text((r + 44, (t + b) / 2), c.right_label, fill=GREY, font=font(11), anchor="mm")
    _plot(draw, c.box, c.series, xlim, ylim)
    draw.rectangle(c.box, outline=BLACK)
    centered(draw, ((l + r) / 2, b + 26), c.xlabel, 11)
    draw.text((l - 44, (t + b) / 2), c.ylabel, fill=BLACK, font=font(11), anchor="mm")
    legend(draw, (r - 8, t + 8), [s for s in c.series if s.label])


def legend(draw: ImageDraw.ImageDraw, top_right: tuple[int, int], series: list[Series]) -> None:
    if not series:
        return
    width = max(text_size(draw, s.label, 10)[0] for s in series) + 34
    x, y = top_right[0] - width, top_right[1]
    draw.rectangle([x - 4, y - 2, top_right[0], y + 16 * len(series) + 2], fill=WHITE, outline=LIGHT)
    for i, s in enumerate(series):
        yy = y + 8 + 16 * i
        _polyline(draw, [(x, yy), (x + 22, yy)], Series([], [], color=s.color, dashed=s.dashed, markers=False))
        draw.text((x + 28, yy), s.label, fill=BLACK, font=font(10), anchor="lm")


def colormap(share: float, low: Color = WHITE, high: Color = (8, 48, 107)) -> Color:
    """Linear blend from `low` (0) to `high` (1)."""
    s = min(1.0, max(0.0, share))
    return tuple(round(a + (b - a) * s) for a, b in zip(low, high))  # type: ignore[return-value]


def diverging(v: float) -> Color:
    """Blue (-1) - white (0) - red (+1), for standardized values."""
    return colormap(v, WHITE, (180, 4, 38)) if v >= 0 else colormap(-v, WHITE, (59, 76, 192))


def blank(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (int(width), int(height)), WHITE)
    return img, ImageDraw.Draw(img)


def save(img: Image.Image, path: str | Path) -> Path:
    """Write a PNG through a temporary file, so a reader never sees half a picture."""
    from dlrunner.reporting.files import atomic_write

    # compress_level=1: fast, these are small, flat pictures
    return atomic_write(path, lambda f: img.save(f, format="PNG", compress_level=1), binary=True)
