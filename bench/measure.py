"""The arithmetic behind bench/run.py's figures, kept free of torch so tests/test_bench.py checks it in
milliseconds: time to a target accuracy from metrics.csv, steady-state epoch times, ratios, MFU."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, FLOP/s; the first name
# fragment found in torch.cuda.get_device_name() wins, so the specific variants come first.
PEAK_BF16_DENSE = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5
    ("H200", 989e12),
    ("A100", 312e12),  # SXM4 and PCIe alike
)


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv (one per epoch: epoch, train/*, val/*, lr, trick columns, time)."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def time_to_target(rows: list[dict], target: float, metric: str = "val/acc") -> dict:
    """The first epoch whose `metric` reaches `target`, and the loop seconds up to and including it:
    the sum of metrics.csv's `time` column (each epoch's train + validation). `loop_s_after` is the
    time of the epochs that followed (a run does not stop at the target). Never reached: epoch None."""
    elapsed, total = 0.0, sum(float(r["time"]) for r in rows)
    for r in rows:
        elapsed += float(r["time"])
        if float(r[metric]) >= target:
            return {"epoch": int(r["epoch"]), "loop_s": elapsed, "loop_s_after": total - elapsed}
    return {"epoch": None, "loop_s": None, "loop_s_after": 0.0}


def steady(starts: list[float]) -> list[float]:
    """Epoch times from the moments consecutive epochs started (so each includes everything its epoch
    did: train, validation, checkpoint, logging), the first one dropped as warm-up."""
    return [b - a for a, b in zip(starts, starts[1:])][1:]


def ratios(values: list[float]) -> list[float | None]:
    """Each value over the one before it (None for the first)."""
    return [None] + [b / a for a, b in zip(values, values[1:])]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def peak_bf16(gpu_name: str) -> float | None:
    """The GPU's dense bf16 peak in FLOP/s, None when it is not in PEAK_BF16_DENSE."""
    return next((peak for frag, peak in PEAK_BF16_DENSE if frag.lower() in gpu_name.lower()), None)


def mfu(flops_per_step: float, steps_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilization: the FLOPs the model's training step needs (forward + backward,
    counted once, whatever the kernels do) per second, over the device's peak."""
    return flops_per_step * steps_per_s / peak if peak else None


def abba(first: Callable[[], T], second: Callable[[], T], rounds: int) -> tuple[list[T], list[T]]:
    """Each function's results over `rounds` rounds, called alternately ABBA (A B, B A, A B, ...) so
    that neither always runs on a warmer machine; round 0 warms both up and is not counted."""
    a: list[T] = []
    b: list[T] = []
    for r in range(rounds + 1):
        if r % 2 == 0:
            x, y = first(), second()
        else:
            y, x = second(), first()
        if r:
            a.append(x)
            b.append(y)
    return a, b
