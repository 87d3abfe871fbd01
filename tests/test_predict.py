"""`dlrun mode=predict`: raw files through the checkpoint's own preprocessing give the same
predictions as the model on the corresponding validation samples; bad input is one line."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from dlrunner.engine import checkpoint

from dlrunner.modes import predict, train as runner
from dlrunner.reporting.analysis import raw_inputs
from dlrunner.cli import CONF_DIR
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.reporting.rundir import register_resolvers
from dlrunner.validate import validate


def train(root: Path, *overrides: str) -> Path:
    """A tiny run trained in-process; returns its folder."""
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"out_dir={root}", "device=cpu", "checkpoint_interval=0", *overrides])
    run_dir = root / "run"
    runner.train(cfg, run_dir, {}, Reporter(live=False))
    return run_dir


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("digits"), "epochs=3", "data.fraction=0.3")


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("wine"), "data=tabular", "model=mlp", "epochs=3")


@pytest.fixture(scope="module")
def digits_job(digits_run):
    return predict.rebuild(checkpoint.load(digits_run), "cpu", print)


def model_probs(job, x_normalized: torch.Tensor) -> torch.Tensor:
    """The checkpoint's model on inputs exactly as the data pipeline fed it (plain forward)."""
    job.model.eval()
    with torch.no_grad():
        return job.model(x_normalized).softmax(1)


def read_predictions(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_png_of_a_val_image_predicts_like_the_val_sample(digits_run, digits_job, dlrun, tmp_path):
    job = digits_job
    x = job.data.val.x[:5]
    raw = raw_inputs(x, job.data.mean, job.data.std)  # the pipeline's [0, 1] pixels, before normalization
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(len(x)):  # 8-bit grayscale files, as a user would have them
        Image.fromarray((raw[i, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(folder / f"v{i}.png")
    r = dlrun("mode=predict", f"ckpt={digits_run}", f"input={folder}/*.png")
    assert r.returncode == 0, r.stderr
    rows = read_predictions(r.run_dirs()[-1] / "predictions.csv")
    expected = model_probs(job, x)
    names = job.data.class_names
    assert [Path(row["input"]).name for row in rows] == [f"v{i}.png" for i in range(len(x))]
    for i, row in enumerate(rows):
        got = torch.tensor([float(row[f"p_{c}"]) for c in names])
        assert torch.allclose(got, expected[i], atol=5e-3), (got, expected[i])
        assert row["pred"] == names[int(expected[i].argmax())]
        assert float(row["prob"]) == pytest.approx(float(expected[i].max()), abs=5e-3)
    assert "predictions (5 inputs)" in r.stdout and "top-3" in r.stdout


def test_8x8_digit_png_is_upsampled_like_the_pipeline(digits_run, digits_job, tmp_path):
    from sklearn.datasets import load_digits

    img = load_digits().images[:3]  # the original 8x8 scans, values 0..16
    for i, a in enumerate(img):
        Image.fromarray(np.round(a * 255 / 16).astype(np.uint8)).save(tmp_path / f"d{i}.png")
    meta = checkpoint.load(digits_run)["data"]
    inputs = predict.read_inputs(predict.find_files(str(tmp_path / "d*.png")), meta)
    # the digits pipeline, written out: /16, bilinear upsampling, then the checkpoint's normalization
    ref = F.interpolate(torch.tensor(img, dtype=torch.float32)[:, None] / 16, size=(28, 28), mode="bilinear",
                        align_corners=False)
    assert inputs.x.shape == (3, 1, 28, 28)
    assert float((inputs.x - ref).abs().max()) < 3e-3
    mean, std = meta["mean"].view(1, -1, 1, 1), meta["std"].view(1, -1, 1, 1)
    got = predict.logits(digits_job, predict.normalize(inputs.x, meta)).softmax(1)
    assert torch.allclose(got, model_probs(digits_job, (ref - mean) / std), atol=5e-3)


def test_csv_for_a_tabular_run_matches_by_column_name(wine_run, tmp_path):
    from sklearn.datasets import load_wine

    ckpt = checkpoint.load(wine_run)
    features = ckpt["data"]["features"]
    assert features == list(load_wine().feature_names)
    job = predict.rebuild(ckpt, "cpu", print)
    x = job.data.val.x
    raw = raw_inputs(x, job.data.mean, job.data.std).double().numpy()
    order = list(reversed(features)) + ["target"]  # another column order, plus a column the model ignores
    path = tmp_path / "new.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(order)
        for i, row in enumerate(raw):
            w.writerow([repr(float(row[features.index(c)])) if c != "target" else "x" for c in order])
    cfg = OmegaConf.create({"ckpt": str(wine_run), "input": str(path), "device": "cpu"})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    predict.predict(cfg, out_dir, Reporter(live=False))
    rows = read_predictions(out_dir / "predictions.csv")
    expected = model_probs(job, x)
    assert [r["input"] for r in rows] == [f"{path}[{i}]" for i in range(len(x))]
    got = torch.tensor([[float(r[f"p_{c}"]) for c in ckpt["data"]["class_names"]] for r in rows])
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_image_folder_run_reads_files_with_its_own_transform(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c, base in enumerate(((200, 40, 40), (40, 200, 40))):  # reddish vs greenish, odd sizes: resized
        (root / f"class{c}").mkdir(parents=True)
        for i in range(10):
            arr = np.clip(np.array(base) + rng.integers(-30, 30, (13 + i, 11, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{i}.png")
    run = train(tmp_path / "out", "data=folder", f"data.path={root}", "data.size=16", "data.num_workers=0",
                "data.val_fraction=0.3", "data.test_fraction=0.2", "epochs=1")
    ckpt = checkpoint.load(run)
    job = predict.rebuild(ckpt, "cpu", print)
    val = job.data.val  # a Dataset of (path, label) read through the run's transform
    files = [Path(p) for p, _ in val.samples]
    inputs = predict.read_inputs(files, ckpt["data"])
    expected = torch.stack([val[i][0] for i in range(len(val))])  # normalized by torchvision's Normalize
    assert torch.allclose(predict.normalize(inputs.x, ckpt["data"]), expected, atol=1e-5)


def test_csv_missing_a_column_names_the_expected_ones(wine_run, tmp_path):
    meta = checkpoint.load(wine_run)["data"]
    path = tmp_path / "short.csv"
    path.write_text("alcohol,malic_acid\n13.0,2.0\n")
    with pytest.raises(DlrunError, match=r"no column 'ash'.*this model expects the columns alcohol, malic_acid, ash"):
        predict.read_inputs([path], meta)


def test_sequence_csv_rows_and_tensor_files(tmp_path):
    meta = {"name": "mnist1d", "modality": "sequence", "in_shape": [1, 40], "class_names": list("0123456789"),
            "mean": torch.tensor([0.5]), "std": torch.tensor([2.0]), "features": []}
    seqs = np.random.default_rng(0).normal(size=(3, 40)).astype(np.float32)
    np.savetxt(tmp_path / "s.csv", seqs, delimiter=",")
    np.save(tmp_path / "one.npy", seqs[0][None])  # a single sample (*in_shape)
    torch.save(torch.from_numpy(seqs[:2, None]), tmp_path / "two.pt")  # a batch (N, *in_shape)
    got = predict.read_inputs(predict.find_files(str(tmp_path)), meta)
    assert got.names == [str(tmp_path / "one.npy"), *[f"{tmp_path / 's.csv'}[{i}]" for i in range(3)],
                         *[f"{tmp_path / 'two.pt'}[{i}]" for i in range(2)]]
    assert torch.allclose(got.x[:, 0], torch.from_numpy(np.concatenate([seqs[:1], seqs, seqs[:2]])), atol=1e-6)
    assert torch.allclose(predict.normalize(got.x, meta), (got.x - 0.5) / 2.0)
    np.savetxt(tmp_path / "bad.csv", seqs[:, :39], delimiter=",")
    with pytest.raises(DlrunError, match=r"a row has 39 values; this model expects 40 values"):
        predict.read_inputs([tmp_path / "bad.csv"], meta)


@pytest.mark.slow
def test_wrong_shape_npy_is_one_line_and_exit_2(digits_run, dlrun, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 32, 32), dtype=np.float32))
    r = dlrun("mode=predict", f"ckpt={digits_run}", "input=x.npy")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "dlrun: error: input x.npy has shape (3, 32, 32); this model expects (1, 28, 28) "
        "(digits: pixels in [0, 1], normalized by the checkpoint) or a batch (N, 1, 28, 28)"]


@pytest.mark.slow
def test_glob_matching_nothing_is_one_line(digits_run, dlrun):
    r = dlrun("mode=predict", f"ckpt={digits_run}", "input=nothing/*.png")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["dlrun: error: input=nothing/*.png: no file matches this pattern"]


def test_predict_needs_ckpt_and_input(make_cfg):
    with pytest.raises(DlrunError, match="mode=predict needs ckpt=PATH"):
        validate(make_cfg("mode=predict", "input=a.png"))
    with pytest.raises(DlrunError, match="mode=predict needs input=PATH"):
        validate(make_cfg("mode=predict", "ckpt=run"))
