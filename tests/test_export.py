"""`dlrun mode=export`: each format, loaded with its own loader, reproduces the checkpoint's logits
on real validation inputs; preprocessing.json carries what a user needs to feed it."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlrunner.engine import checkpoint

from dlrunner.modes import export, train as runner
from dlrunner.build import build_model
from dlrunner.cli import CONF_DIR
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.modes.predict import rebuild
from dlrunner.reporting.rundir import register_resolvers
from dlrunner.validate import EXPORT_FORMATS


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny digits run (ResNet with BatchNorm: eval-mode statistics must survive the export)."""
    root = tmp_path_factory.mktemp("export")
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"out_dir={root}", "device=cpu", "epochs=1", "data.fraction=0.2",
                                           "model=resnet", "model.width=8", "checkpoint_interval=0"])
    runner.train(cfg, root / "run", {}, Reporter(live=False))
    return root / "run"


@pytest.fixture(scope="module")
def reference(run):
    """The checkpoint's network and real validation inputs (normalized, as it takes them)."""
    ckpt = checkpoint.load(run)
    job = rebuild(ckpt, "cpu", print)
    net = job.base_model.eval()
    x = job.data.val.x[:40]
    with torch.no_grad():
        return ckpt, x, net(x)


def do_export(run: Path, fmt: str, out_dir: Path) -> float:
    out_dir.mkdir(exist_ok=True)
    cfg = OmegaConf.create({"ckpt": str(run), "format": fmt, "device": "cpu"})
    return export.export(cfg, out_dir, Reporter(live=False))


def load_artifact(fmt: str, path: Path, ckpt: dict):
    """Each format through its own library, not through dlrunner.modes.export."""
    if fmt == "torchscript":
        with warnings.catch_warnings():  # torch.jit.load is marked deprecated, yet it is how .ts files load
            warnings.simplefilter("ignore", FutureWarning)
            m = torch.jit.load(str(path))
        return lambda x: m(x)
    if fmt == "onnx":
        import onnxruntime as ort

        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in s.get_inputs()] == ["input"] and [o.name for o in s.get_outputs()] == ["logits"]
        return lambda x: torch.from_numpy(s.run(None, {"input": x.numpy()})[0])
    from safetensors.torch import load_file

    from dlrunner.data.core import DataBundle

    side = json.loads(path.with_suffix(".json").read_text())
    assert OmegaConf.create(side["config"]).model.width == 8
    meta = ckpt["data"]
    stand_in = DataBundle("digits", [], [], [], meta["class_names"], meta["modality"], tuple(meta["in_shape"]),
                          meta["mean"], meta["std"])
    model = build_model(OmegaConf.create(side["model"]), stand_in, print)
    model.load_state_dict(load_file(str(path)))  # strict: every tensor of a fresh model is in the file
    model.eval()
    return lambda x: model(x)


def check_round_trip(fmt: str, out_dir: Path, reference) -> None:
    ckpt, x, logits = reference
    path = out_dir / export.FORMATS[fmt]
    assert path.is_file()
    with torch.no_grad():
        got = load_artifact(fmt, path, ckpt)(x)  # 40 samples; the export traced with 2: the batch axis is free
    assert got.shape == logits.shape
    assert float((got - logits).abs().max()) < 1e-4
    pre = json.loads((out_dir / "preprocessing.json").read_text())
    assert pre["in_shape"] == [1, 28, 28] and pre["modality"] == "image"
    assert pre["class_names"] == ckpt["data"]["class_names"]
    assert torch.allclose(torch.tensor(pre["mean"]), ckpt["data"]["mean"])
    assert torch.allclose(torch.tensor(pre["std"]), ckpt["data"]["std"])


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_round_trip_reproduces_the_checkpoint(run, reference, tmp_path, fmt):
    diff = do_export(run, fmt, tmp_path / fmt)
    assert 0 <= diff < 1e-4
    check_round_trip(fmt, tmp_path / fmt, reference)
    if fmt == "safetensors":
        assert type(export.load_safetensors(tmp_path / fmt / "model.safetensors")).__name__ == "ResNet"


def test_formats_agree_with_validation():
    assert tuple(export.FORMATS) == EXPORT_FORMATS


def test_an_artifact_that_differs_is_refused(run, tmp_path, monkeypatch):
    write, load = export.WRITERS["torchscript"]
    monkeypatch.setitem(export.WRITERS, "torchscript", (write, lambda p: (lambda x: load(p)(x) + 1e-3)))
    with pytest.raises(DlrunError, match=r"does not reproduce the checkpoint: max \|logit difference\| 0\.001"):
        do_export(run, "torchscript", tmp_path / "bad")


@pytest.mark.slow
def test_cli_torchscript_round_trip_says_where_and_the_difference(run, reference, dlrun):
    r = dlrun("mode=export", f"ckpt={run}")  # format=torchscript is the default
    assert r.returncode == 0, r.stderr
    out_dir = r.run_dirs()[-1]
    assert f"-> {out_dir / 'model.ts'} (torchscript)" in r.stdout
    assert re.search(r"max \|logit difference\| \S+ on \d+ validation samples", r.stdout)
    check_round_trip("torchscript", out_dir, reference)


@pytest.mark.slow
def test_bad_format_is_one_line(run, dlrun):
    r = dlrun("mode=export", f"ckpt={run}", "format=tflite")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["dlrun: error: format must be one of torchscript, onnx, safetensors; got 'tflite'"]
