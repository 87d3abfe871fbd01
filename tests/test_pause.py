"""`stop_after=M`: a run paused after M epochs, its LR schedule set for `epochs`, continues from its
checkpoint (`resume=RUN_DIR`) exactly as if trained straight through: what the sweep's successive
halving relies on."""
import json

import pytest

from dlrunner.modes import train as runner
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.validate import validate


def _rows(path):
    return [r.rsplit(",", 1)[0] for r in path.read_text().splitlines()]  # the time column dropped


def test_a_paused_run_continues_to_the_same_metrics(make_cfg, tmp_path):
    over = ("debug=smoke", "epochs=4", "schedule=cosine", "data.batch_size=16", "seed=2")
    runner.train(make_cfg(*over), tmp_path / "straight", {}, Reporter(live=False))
    paused = tmp_path / "outputs" / "a"
    value = runner.train(make_cfg(*over, "stop_after=1"), paused, {}, Reporter(live=False))
    summary = json.loads((paused / "summary.json").read_text())
    assert summary["status"] == "paused" and summary["epochs_run"] == 1 and value == summary["value"]
    rows = _rows(paused / "metrics.csv")
    assert len(rows) == 2 and rows == _rows(tmp_path / "straight" / "metrics.csv")[:2]
    # the LR of the paused epoch is the cosine of a 4-epoch run, not of a 1-epoch one (which ends at 0)
    lr = float((paused / "metrics.csv").read_text().splitlines()[1].split(",")[-2])
    assert lr > 0
    # continued in two more steps: to epoch 3 (still paused), then to the end
    runner.train(make_cfg(*over, f"resume={paused}", "stop_after=3"), tmp_path / "outputs" / "b", {},
                 Reporter(live=False))
    assert json.loads((tmp_path / "outputs" / "b" / "summary.json").read_text())["status"] == "paused"
    runner.train(make_cfg(*over, f"resume={tmp_path / 'outputs' / 'b'}"), tmp_path / "outputs" / "c", {},
                 Reporter(live=False))
    done = json.loads((tmp_path / "outputs" / "c" / "summary.json").read_text())
    assert done["status"] == "completed" and done["epochs_run"] == 4
    assert _rows(tmp_path / "outputs" / "c" / "metrics.csv") == _rows(tmp_path / "straight" / "metrics.csv")


def test_stop_after_must_be_a_positive_number_of_epochs(make_cfg):
    with pytest.raises(DlrunError, match="stop_after must be null or an integer >= 1"):
        validate(make_cfg("stop_after=0"))
