"""mode=climb (the model ladder, rung by rung, with its stop rule) and mode=final (the retrain on
train+val that scores the test split once)."""
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from hydra import initialize_config_dir

from dlrunner.modes import climb, eval as eval_mode, train as runner
from dlrunner.build import build_data, build_model
from dlrunner.cli import CONF_DIR
from dlrunner.reporting.console import Reporter
from dlrunner.data.batches import TensorBatches
from dlrunner.errors import DlrunError


def fake_hc(*task: str, model: str = "lenet"):
    """What climb.plan reads from HydraConfig: the command line's overrides and group choices."""
    return SimpleNamespace(overrides=SimpleNamespace(task=list(task), hydra=[]),
                           runtime=SimpleNamespace(choices={"model": model}, config_sources=[]),
                           job=SimpleNamespace(config_name="config"))


@pytest.mark.parametrize("data, kind, labels", [
    (["data=digits"], "image", ["lenet", "resnet", "resnet18", "resnet34", "resnet50"]),
    (["data=mnist1d", "data.num_samples=200"], "sequence", ["lstm", "conv1d", "transformer"]),
    (["data=tabular"], "tabular", ["mlp", "mlp depth=2", "mlp depth=3"]),
])
def test_default_ladder_follows_the_datas_modality(make_cfg, tmp_path, data, kind, labels):
    data = [*data, f"data.root={tmp_path / 'data'}"] if "data=mnist1d" in data else data
    task = [*data, "epochs=3", "model.act=gelu"]
    notes = []
    cfg = make_cfg("mode=climb", *task)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        rungs, source = climb.plan(cfg, fake_hc("mode=climb", *task), notes.append)
    assert source == f"the {kind} ladder"
    assert [r.label for r in rungs] == labels
    assert [r.folder for r in rungs][:2] == [f"01-{labels[0]}", f"02-{labels[1].replace(' ', '-').replace('=', '-')}"]
    # each rung is the user's job with only the model changed: same epochs, and model.act where the model has one
    jobs = [yaml.safe_load(r.key) for r in rungs]
    assert all(j["epochs"] == 3 for j in jobs)
    for r, j in zip(rungs, jobs):
        if "act" in j["model"]:
            assert j["model"]["act"] == "gelu"
        else:  # a model without the key (lstm, torchvision resnets) runs without it, and says so
            assert any(f"rung {r.index} ({r.label}) has no model.act" in n for n in notes)
    if kind == "tabular":  # "other": mlp -> deeper mlp
        assert [j["model"]["depth"] for j in jobs] == [1, 2, 3]
    # the first rung is the model that model=auto builds for this data
    bundle = build_data(cfg.data, print)
    auto = build_model(make_cfg(*data, "model=auto").model, bundle, print)
    first = build_model(make_cfg(*data, *rungs[0].own).model, bundle, print)
    assert type(first) is type(auto)


def rung(i: int) -> climb.Rung:
    return climb.Rung(i, [f"model=m{i}"], [f"model=m{i}"], f"m{i}")


def fake_train(outcomes: dict[int, tuple[str, float | None]], trained: list[int]):
    def train(r: climb.Rung) -> climb.Result:
        trained.append(r.index)
        status, value = outcomes[r.index]
        return climb.Result(r.index, r.label, r.own, status, value)
    return train


@pytest.mark.parametrize("outcomes, lower, chosen, trained, why", [
    # accuracy: +0.3, then +0.003 <= 0.005: stop; the simpler rung 2 is kept
    ({1: ("completed", 0.5), 2: ("completed", 0.8), 3: ("completed", 0.803)}, False, 2, [1, 2, 3], "gained +0.0030"),
    # a loss must fall by more than min_gain
    ({1: ("completed", 1.0), 2: ("completed", 0.5), 3: ("completed", 0.2), 4: ("completed", 0.199)}, True, 3,
     [1, 2, 3, 4], "gained +0.0010"),
    # a rung that fails before any has worked is passed over; one that fails after ends the climb
    ({1: ("failed", None), 2: ("completed", 0.7), 3: ("diverged", None)}, False, 2, [1, 2, 3], "rung 3 (m3) diverged"),
    ({1: ("completed", 0.7), 2: ("interrupted", None)}, False, 1, [1, 2], "interrupted in rung 2"),
    ({1: ("completed", 0.1), 2: ("completed", 0.2), 3: ("completed", 0.3), 4: ("completed", 0.4),
      5: ("completed", 0.5)}, False, 5, [1, 2, 3, 4, 5], "the top of the ladder"),
])
def test_stop_rule(outcomes, lower, chosen, trained, why):
    seen, notes = [], []
    results, best, stopped = climb.ascend([rung(i) for i in range(1, 6)], fake_train(outcomes, seen), 0.005, lower,
                                          notes.append)
    assert seen == trained and [r.rung for r in results] == trained
    assert best.rung == chosen and why in stopped
    if outcomes[1][0] == "failed":
        assert "no rung has worked yet" in notes[0]


@pytest.mark.parametrize("spec, words", [
    ([], "non-empty list of rungs"),
    ([[]], "rung 1 must be a model config name"),
    (["lenet", ["model=mlp", "depth"]], "rung 2: 'depth' is not an override"),
    ([3], "rung 1 must be"),
])
def test_bad_ladders_are_refused(spec, words):
    with pytest.raises(DlrunError, match=words):
        climb.parse_ladder(spec)
    assert climb.parse_ladder(["resnet", ["model=mlp", "model.depth=3"], {"model": "mlp", "model.depth": 2}]) == [
        ["model=resnet"], ["model=mlp", "model.depth=3"], ["model=mlp", "model.depth=2"]]


@pytest.mark.slow
def test_climb_stops_at_the_first_rung_that_no_longer_pays(dlrun, tmp_path):
    # rung 1 cannot learn (a learning rate of 1e-9), rung 2 learns, rung 3 is rung 2 again (gains 0),
    # so rung 4 must never be trained
    ladder = "climb.ladder=[{model:mlp,optim.lr:1e-9},mlp,{model:mlp,model.act:relu},{model:mlp,model.depth:2}]"
    args = ["mode=climb", "data=tabular", "epochs=2", "optim.lr=0.01", "device=cpu", ladder]
    r = dlrun(*args, f"hydra.run.dir={tmp_path / 'climb'}")
    assert r.returncode == 0, r.stderr[-3000:]
    root = tmp_path / "climb"
    folders = sorted(p.name for p in (root / "rungs").iterdir())
    assert folders == ["01-mlp-optim.lr-1e-09", "02-mlp", "03-mlp-act-relu"]
    rec = json.loads((root / "climb.json").read_text())
    summaries = [json.loads((root / "rungs" / f / "summary.json").read_text()) for f in folders]
    values = [s["value"] for s in summaries]
    assert values[1] - values[0] > 0.005 and values[2] == values[1]
    assert [x["status"] for x in rec["rungs"]] == ["completed"] * 3
    assert [x["value"] for x in rec["rungs"]] == values  # what each rung's own run recorded
    assert rec["rungs"][1]["gain"] == pytest.approx(values[1] - values[0]) and rec["rungs"][2]["gain"] == 0
    assert rec["not_trained"] == [{"rung": 4, "label": "mlp depth=2", "overrides": ["model=mlp", "model.depth=2"]}]
    assert rec["status"] == "completed" and "rung 3 (mlp act=relu) gained +0.0000" in rec["stopped"]
    chosen = rec["chosen"]
    assert chosen["rung"] == 2 and chosen["run_dir"] == str(root / "rungs" / "02-mlp")
    assert chosen["checkpoint"] == str(root / "rungs" / "02-mlp" / "checkpoints" / "best.pt")
    for f in folders:  # every trained rung keeps its checkpoints
        assert (root / "rungs" / f / "checkpoints" / "best.pt").is_file()
        assert (root / "rungs" / f / "checkpoints" / "last.pt").is_file()
    # the same budget and overrides for every rung; rung 1's own learning rate wins over the command line's
    cfgs = [yaml.safe_load((root / "rungs" / f / ".hydra" / "config.yaml").read_text()) for f in folders]
    assert [c["epochs"] for c in cfgs] == [2, 2, 2] and [c["optim"]["lr"] for c in cfgs] == [1e-9, 0.01, 0.01]
    with (root / "climb.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(x["rung"]) for x in rows] == [1, 2, 3] and float(rows[1]["metric"]) == values[1]
    assert "not trained" in r.stdout and "chose rung 2 (mlp)" in r.stdout
    # the same climb again, resuming this one: no rung is trained twice, the same rung is chosen
    again = dlrun(*args, f"resume={root}", f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    rec2 = json.loads((tmp_path / "again" / "climb.json").read_text())
    assert not (tmp_path / "again" / "rungs").exists() and "epoch 1/" not in again.stdout
    assert [x["reused"] for x in rec2["rungs"]] == [True] * 3
    assert rec2["chosen"]["run_dir"] == chosen["run_dir"] and rec2["chosen"]["value"] == chosen["value"]


@pytest.mark.parametrize("args, words", [
    (["mode=climb", "climb.ladder=[nope]"], "rung 1 (nope): In 'config': Could not find 'model/nope'"),
    (["mode=climb", "climb.ladder=[]"], "non-empty list of rungs"),
    (["mode=climb", "climb.ladder=[lenet,{model:mlp,model.nokey:3}]"], "rung 2 (mlp nokey=3): Could not override"),
    (["mode=climb", "climb.min_gain=-1"], "climb.min_gain must be a number >= 0"),
    (["mode=final", "data=tabular", "model=mlp", "data.test_fraction=0"], "holds none out"),
])
def test_bad_input_is_one_line_before_any_training(dlrun, args, words):
    r = dlrun(*args)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dlrun: error:") and words in err[0], r.stderr
    assert "epoch 1/" not in r.stdout and not list((dlrun.cwd / "outputs").rglob("rungs"))
    assert not list((dlrun.cwd / "outputs").rglob("checkpoints"))


def test_final_trains_on_train_and_val_and_reads_the_test_split_once(make_cfg, tmp_path, monkeypatch):
    data = ["data=tabular", "model=mlp", "epochs=2", "optim.lr=0.01", "device=cpu"]
    ordinary = build_data(make_cfg(*data).data, print)  # the splits an ordinary run of this config gets
    passes = []
    iterate = TensorBatches.iterate

    def counted(self, epoch=0, start=0):
        passes.append(self)
        return iterate(self, epoch, start)
    monkeypatch.setattr(TensorBatches, "iterate", counted)
    run = tmp_path / "final"
    run.mkdir()
    cfg = make_cfg(*data, "mode=final")
    value = runner.train(cfg, run, {}, Reporter(live=False))
    s = json.loads((run / "summary.json").read_text())

    def same(batches, split) -> bool:
        return batches.x.shape == split.x.shape and torch.equal(batches.x, split.x) and torch.equal(batches.y, split.y)
    # trained on train+val: every sample of both, as an ordinary run normalizes them
    n = len(ordinary.train) + len(ordinary.val)
    assert s["retrain"]["train_samples"] == s["data"]["train"] == n and s["data"]["val"] == 0
    trained = {id(b): b for b in passes if b.shuffle}
    assert len(trained) == 1
    (batches,) = trained.values()
    assert torch.equal(batches.x, torch.cat([ordinary.train.x, ordinary.val.x]))
    # no validation pass, and exactly one pass over the test split, which is the ordinary run's test split
    assert not any(same(b, ordinary.val) for b in passes)
    assert sum(same(b, ordinary.test) for b in passes) == 1 == s["retrain"]["test_passes"]
    assert s["retrain"]["test_samples"] == len(ordinary.test) == s["data"]["test"]
    # the recorded test metrics are the final checkpoint's on that split, as mode=eval measures them
    with (run / "metrics.csv").open() as f:
        assert not any(k.startswith("val/") for k in next(csv.reader(f)))
    ev = tmp_path / "eval"
    ev.mkdir()
    acc = eval_mode.evaluate_checkpoint(make_cfg("mode=eval", f"ckpt={run}", "split=test"), ev, {}, Reporter(live=False))
    measured = json.loads((ev / "eval.json").read_text())
    assert measured["samples"] == len(ordinary.test)
    assert s["retrain"]["test"]["test/acc"] == acc == s["value"] == value and s["optimized_metric"] == "test/acc"
    assert math.isclose(s["retrain"]["test"]["test/loss"], measured["test/loss"], rel_tol=1e-6)
    assert s["mode"] == "final" and s["epochs_run"] == 2 and s["confusion"]["split"] == "test"
    assert sum(map(sum, s["confusion"]["matrix"])) == len(ordinary.test)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 2  # the last epoch's weights, not a chosen one
    # resume=auto never takes a final run for an ordinary one, or the other way round
    assert runner.config_key(cfg) != runner.config_key(make_cfg(*data))


def test_an_interrupted_final_run_resumes_as_a_final_run_only(make_cfg, tmp_path, sigterm_at):
    data = ["data=tabular", "model=mlp", "epochs=3", "optim.lr=0.01", "device=cpu", "checkpoint_interval=0"]
    out = Reporter(live=False)

    def run(name: str, *extra: str) -> Path:
        d = tmp_path / "outputs" / name
        d.mkdir(parents=True)
        runner.train(make_cfg(*data, *extra), d, {}, out)
        return d
    straight = run("straight", "mode=final")
    with sigterm_at(4), pytest.raises(runner.Interrupted):  # in epoch 2 of 3
        run("stopped", "mode=final")
    ordinary = run("ordinary", "resume=auto")  # an ordinary run does not take the final run's checkpoint
    assert not (ordinary / "resume.json").exists()
    resumed = run("resumed", "mode=final", "resume=auto")
    assert json.loads((resumed / "resume.json").read_text())["resumed_from"] == str(tmp_path / "outputs" / "stopped")
    a, b = (json.loads((d / "summary.json").read_text()) for d in (straight, resumed))
    assert b["retrain"]["test"] == a["retrain"]["test"] and b["retrain"]["test_passes"] == 1


def test_val_joins_train_for_streamed_data_too(tmp_path):
    from PIL import Image

    from dlrunner.data.batches import make_batches
    from dlrunner.data.folder import build_folder

    for c, level in enumerate((30, 120, 220)):
        (tmp_path / f"class{c}").mkdir()
        for i in range(8):
            pixels = torch.full((12, 10, 3), level + i, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / f"class{c}" / f"{i}.png")
    b = build_folder(path=str(tmp_path), size=16, num_workers=0, val_fraction=0.25, test_fraction=0.25)
    m = b.with_val_in_train()
    assert m.sizes() == {"train": len(b.train) + len(b.val), "val": 0, "test": len(b.test)}
    batches = make_batches(m.train, 4, shuffle=True, seed=0, device=torch.device("cpu"))
    labels = sorted(int(v) for _, (_, y) in batches.iterate(0) for v in y)
    assert labels == sorted([y for _, y in b.train.samples] + [y for _, y in b.val.samples])
    assert m.test is b.test
