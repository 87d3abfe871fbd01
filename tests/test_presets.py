"""conf/experiment/: every preset composes, carries its header, smoke-runs with debug=smoke, and quotes
the figures `make bench ARGS="--only presets"` measured (bench/results/cpu-presets.json)."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from dlrunner.modes import train as runner
from dlrunner.cli import CONF_DIR
from dlrunner.reporting.console import Reporter

EXPERIMENTS = Path(CONF_DIR) / "experiment"
PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "cpu-presets.json"
SMOKE = {"epochs", "device", "log_every", "data.fraction", "data.num_workers"}  # debug=smoke's keys win


def header(name: str) -> dict[str, str]:
    """The `# Key: text` lines at the top of a preset."""
    lines = (EXPERIMENTS / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_", f"{name}: presets set keys anywhere in the config"
    out = {}
    for line in lines[1:]:
        if not line.startswith("#"):
            break
        m = re.match(r"# (For|Reaches|Measured on|Needs|Run): (.*)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def leaves(node, prefix: str = "") -> dict:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}"""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out |= leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def fake_cifar10(root: Path, per_file: int = 64) -> None:
    """CIFAR-10 in torchvision's own format (pickled batches), small: dlrun's real loading code reads it."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 "labels": [int(i) % 10 for i in range(per_file)]}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))


def stand_ins(cfg, tmp_path: Path, monkeypatch) -> list[str]:
    """What a preset would download, made here: CIFAR-10 files, ImageNet weights in torch.hub's cache."""
    extra = []
    if str(cfg.data._target_).endswith("build_cifar10"):
        import torchvision.datasets.cifar as tv_cifar

        fake_cifar10(tmp_path / "cifar")
        monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # not the published files' md5
        extra.append(f"data.root={tmp_path / 'cifar'}")
    if OmegaConf.select(cfg, "model.pretrained") is True:
        import torchvision.models as tvm

        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        weights = {"resnet18": tvm.ResNet18_Weights, "resnet34": tvm.ResNet34_Weights,
                   "resnet50": tvm.ResNet50_Weights}[cfg.model.arch].DEFAULT
        path = tmp_path / "torch" / "hub" / "checkpoints" / os.path.basename(weights.url)
        path.parent.mkdir(parents=True)
        torch.save(getattr(tvm, cfg.model.arch)().state_dict(), path)  # the architecture's own tensors
    return extra


def test_there_are_presets():
    assert {"digits_lenet", "cifar10_resnet_gpu", "transfer_resnet18"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_header(name):
    h = header(name)
    assert {"For", "Reaches", "Measured on", "Run"} <= set(h), f"{name}: header lines missing"
    assert f"experiment={name}" in h["Run"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_smoke_runs(name, make_cfg, tmp_path, monkeypatch):
    """`dlrun experiment=NAME debug=smoke`: the file's values reach the job, which trains 2 epochs."""
    cfg = make_cfg(f"experiment={name}", "debug=smoke")
    cfg = make_cfg(f"experiment={name}", "debug=smoke", *stand_ins(cfg, tmp_path, monkeypatch))
    raw = yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())
    assert raw.get("defaults"), f"{name}: a preset picks its groups explicitly"
    for entry in raw["defaults"]:  # `- override /model: resnet` -> the model node is conf/model/resnet.yaml's
        ((key, choice),) = entry.items()
        group = key.split("/")[-1]
        if group == "trick":
            assert list(cfg.trick) == list(choice)
        else:
            assert cfg[group]._target_ == OmegaConf.load(EXPERIMENTS.parent / group / f"{choice}.yaml")._target_
    for key, value in leaves({k: v for k, v in raw.items() if k != "defaults"}).items():
        if key not in SMOKE:
            assert OmegaConf.select(cfg, key) == value, f"{name}: {key}"
    quiet = Reporter(live=False)
    quiet.console.quiet = True
    runner.train(cfg, tmp_path / "run", {}, quiet)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs_run"] == 2 and s["device"] == "cpu"
    assert set(s["tricks"]) == set(cfg.trick)  # every trick of the preset ran (and reported)
    assert s["data"]["name"].split(":")[0] == cfg.data._target_.rsplit("build_", 1)[-1]  # tabular:wine -> tabular


def test_command_line_overrides_win_over_a_preset(make_cfg):
    cfg = make_cfg("experiment=digits_lenet", "model.width=8", "schedule=constant", "epochs=3")
    assert cfg.model.width == 8 and cfg.epochs == 3 and cfg.schedule._target_.endswith("constant")
    assert cfg.optim.lr == 0.00486  # the preset's other values stay
    cfg = make_cfg("experiment=transfer_resnet18", "data=folder", "data.path=/imgs")
    assert cfg.data._target_.endswith("build_folder") and cfg.data.size == 64 and cfg.model.pretrained is True


@pytest.mark.parametrize("name", PRESETS)
def test_header_figures_are_the_bench_measurement(name):
    """`Reaches:` quotes bench/results/cpu-presets.json; presets without a measurement say so."""
    bench = json.loads(RESULTS.read_text())
    entry = bench["presets"].get(name)
    reaches = header(name)["Reaches"]
    if entry is None or "skipped" in entry:
        assert reaches.startswith("not yet measured"), f"{name}: no measurement in {RESULTS.name}"
        return
    pairs = re.findall(r"((?:val|test)/\w+) (\d+\.\d+)", reaches)
    assert pairs, f"{name}: `Reaches:` names no figure"
    for metric, shown in pairs:
        assert float(shown) == round(entry[metric], len(shown.split(".")[1])), f"{name}: {metric}"
    assert bench["machine"].split(",")[0] in header(name)["Measured on"]


@pytest.mark.slow
def test_a_sweeps_winner_saved_as_a_preset_reproduces_it(dlrun, tmp_path):
    """`dlrun-preset SWEEP_DIR NAME --config-dir DIR`, then `dlrun --config-dir DIR experiment=NAME`: the
    sweep's own overrides and its picks, and the same value as the winning trial (same seed, one thread)."""
    sw = tmp_path / "sw"
    job = ["data=tabular", "model=mlp", "epochs=3"]
    r = dlrun("-m", "sweep=importance", "sweep.budget=4", "sweep.seeds=[0]", "sweep.tiers=[[optim.lr,schedule]]",
              "sweep.shares=[0.5,0.5]", "sweep.threads_per_trial=1", *job, f"hydra.sweep.dir={sw}")
    assert r.returncode == 0, r.stderr[-3000:]
    best = json.loads((sw / "importance.json").read_text())["best"]
    mine = tmp_path / "mine"
    p = subprocess.run([sys.executable, "-m", "dlrunner.preset", str(sw), "tab", "--config-dir", str(mine)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"wrote {mine / 'experiment' / 'tab.yaml'}; run it: dlrun --config-dir {mine} experiment=tab"
    text = (mine / "experiment" / "tab.yaml").read_text()
    assert text.startswith("# @package _global_\n# tab: the importance sweep's pick")
    # the metric the sweep ranked by (sweep.rank_by=auto: val/loss for this accuracy job), which the preset's runs optimize too
    assert f"# Reaches: val/loss {best['metric']:.4f} (mean of seeds 0)" in text and "optimized_metric: val/loss" in text and "# Measured on: cpu, 1 thread" in text
    dlrun.env["OMP_NUM_THREADS"] = "1"  # as the sweep's trials ran
    r = dlrun("--config-dir", str(mine), "experiment=tab", "hydra.run.dir=outputs/again")
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = OmegaConf.load(tmp_path / "outputs" / "again" / ".hydra" / "config.yaml")
    assert cfg.data._target_.endswith("build_tabular") and cfg.model._target_.endswith("build_mlp") and cfg.epochs == 3
    for key, value in best["values"].items():  # the picks: a group choice or a value
        if key == "schedule":
            assert cfg.schedule._target_.endswith(str(value))
        else:
            assert OmegaConf.select(cfg, key) == pytest.approx(float(value))
    assert r.summary(tmp_path / "outputs" / "again")["value"] == pytest.approx(best["metric"], abs=1e-9)


def test_preset_save_refuses_what_it_cannot_write(tmp_path):
    from dlrunner.errors import DlrunError
    from dlrunner.preset import save

    with pytest.raises(DlrunError, match="no importance.json"):
        save(tmp_path, "x", tmp_path / "conf")
    (tmp_path / "importance.json").write_text(json.dumps({"optimized_metric": "val/acc", "trials": 2,
                                                          "best": {"values": {"optim.lr": "0.001"}, "metric": 0.9,
                                                                   "seeds": [0], "trials": [1]}}))
    with pytest.raises(DlrunError, match="letters, digits"):
        save(tmp_path, "a b", tmp_path / "conf")
    path = save(tmp_path, "ok", tmp_path / "conf")
    assert "optim:\n  lr: 0.001" in path.read_text()
    with pytest.raises(DlrunError, match="exists; pass --force"):
        save(tmp_path, "ok", tmp_path / "conf")
    (tmp_path / "importance.json").write_text(json.dumps({"best": {"values": {"schedule": "nope"}, "metric": 0.9,
                                                                   "seeds": [0], "trials": [1]}}))
    with pytest.raises(DlrunError, match="does not compose"):
        save(tmp_path, "bad", tmp_path / "conf")
    assert not (tmp_path / "conf" / "experiment" / "bad.yaml").exists()  # nothing half-written is left
