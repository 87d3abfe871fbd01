"""The arithmetic behind `make bench`'s figures (bench/measure.py), on made-up numbers: time to a target
accuracy read from a metrics.csv, steady-state epoch times, ratios, the GPU peak table and MFU."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import measure  # noqa: E402


def load_run():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_metrics(path: Path, accs: list[float], times: list[float]) -> Path:
    # as reporting.files.write_rows lays it out, with a trick's column after `time` (lr_finder does that)
    lines = ["epoch,train/loss,train/acc,val/loss,val/acc,lr,time,lr_finder/suggestion"]
    lines += [f"{i + 1},0.5,0.9,0.4,{a},0.0003,{t},0.0016" for i, (a, t) in enumerate(zip(accs, times))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_time_to_target_from_metrics_csv(tmp_path):
    rows = measure.read_metrics(write_metrics(tmp_path / "metrics.csv", [0.5, 0.8, 0.96, 0.95, 0.97],
                                              [2.0, 0.25, 0.25, 0.5, 1.0]))
    hit = measure.time_to_target(rows, 0.96)
    assert hit["epoch"] == 3
    assert hit["loop_s"] == pytest.approx(2.5)  # epochs 1-3
    assert hit["loop_s_after"] == pytest.approx(1.5)  # epochs 4-5, taken off the process's wall time
    assert measure.time_to_target(rows, 0.97)["epoch"] == 5
    assert measure.time_to_target(rows, 0.99) == {"epoch": None, "loop_s": None, "loop_s_after": 0.0}
    assert measure.time_to_target(rows, 0.45, metric="val/loss")["epoch"] is None  # 0.4 < 0.45 every epoch


def test_steady_epochs_ratios_median():
    assert measure.steady([10.0, 13.0, 14.0, 16.0, 17.5]) == [1.0, 2.0, 1.5]  # 3 s warm-up left out
    assert measure.steady([1.0, 2.0]) == []
    assert measure.ratios([0.1, 0.2, 0.8]) == [None, 2.0, 4.0]
    assert measure.median([3.0, 1.0, 2.0]) == 2.0
    assert measure.median([]) is None


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756),
                                          ("NVIDIA H100 NVL", 835), ("NVIDIA H200", 989),
                                          ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312)])
def test_peak_bf16(name, tflops):
    assert measure.peak_bf16(name) == tflops * 1e12


def test_mfu():
    # ResNet-18 on 32x32 inputs: ~1.67 GFLOP per image forward + backward; 512 images a step, 100 steps/s
    flops = 1.67e9 * 512
    assert measure.mfu(flops, 100.0, 989e12) == pytest.approx(0.086455, rel=1e-4)
    assert measure.mfu(2e12, 100.0, 1e15) == pytest.approx(0.2)
    assert measure.peak_bf16("Tesla T4") is None
    assert measure.mfu(2e12, 100.0, measure.peak_bf16("Tesla T4")) is None


def test_synthetic_cifar_like():
    from synthetic import cifar_like

    x, y = cifar_like(n=40, seed=1)
    assert x.shape == (40, 3, 32, 32) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 255
    assert torch.bincount(y).tolist() == [4] * 10
    assert torch.equal(cifar_like(n=40, seed=1)[0], x)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU answer")
def test_gpu_section_skips_without_cuda(tmp_path):
    assert load_run().gpu(tmp_path) == {"skipped": "no CUDA"}


def test_dlrun_loop_ends_on_the_hand_loops_weights(tmp_path):
    """The overhead benchmark's premise: same start, same batches, deterministic -> the very same
    weights as the minimal hand-written loop (dlrun adds bookkeeping, not different arithmetic)."""
    res = load_run().same_weights(tmp_path, ["data.fraction=0.3"], epochs=1)
    assert res["equal"] and res["max_abs_weight_diff"] == 0.0


def test_the_readme_search_table_is_the_one_measured(capsys):
    """Every row of the README's search table is bench/search.py --table's, read from bench/results."""
    import search

    search.table(search.measured())
    search.replicates(search.measured())
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    readme = (BENCH.parent / "README.md").read_text().splitlines()
    assert len(rows) > 8 and [r for r in rows if r not in readme] == []


def test_a_sweeps_summary_keeps_every_trials_val_acc_and_loss(tmp_path):
    """The search bench keeps each trial's val/acc and val/loss at its best epoch beside trials.csv's
    row (another ranking rule can then be judged on the same trials); a trial without a summary gets none."""
    import json

    import search

    run = tmp_path / "0"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"best": {"epoch": 7, "val/acc": 0.95, "val/loss": 0.21, "lr": 1e-3}}))
    (tmp_path / "importance.json").write_text(json.dumps({"best": {"values": {"optim.lr": "0.001"}, "metric": 0.95,
                                                                   "seeds": [0]}, "failed": 1}))
    (tmp_path / "trials.csv").write_text("trial,stage,overrides,metric,time,run_dir\n"
                                         f"0,baseline,,0.95,3.0,{run}\n1,tier1,optim.lr=1,,0.5,{tmp_path / 'gone'}\n")
    res = search.summarize(tmp_path, 10.0)
    assert res["trial_rows"][0] == {"trial": "0", "stage": "baseline", "overrides": "", "metric": "0.95", "time": "3.0",
                                    "epoch": 7, "val/acc": 0.95, "val/loss": 0.21}
    assert "val/loss" not in res["trial_rows"][1] and "run_dir" not in res["trial_rows"][1]
    assert (res["trials"], res["configurations"], res["trial_time_s"]) == (2, 2, 3.5)
