"""The package's map: every mode is a module of dlrunner.modes with `run(job)`, and the config
builders that moved into engine/ and reporting/ still answer at their old paths (a saved config's
`_target_`) as the very same module."""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from dlrunner import modes
from dlrunner.build import build_job
from dlrunner.errors import DlrunError
from dlrunner.moved import MOVED
from dlrunner.validate import validate


@pytest.mark.parametrize("name", sorted(modes.MODES))
def test_every_mode_is_a_module_with_one_signature(name):
    module = importlib.import_module(f"dlrunner.modes.{modes.MODES[name]}")
    assert list(inspect.signature(module.run).parameters) == ["job"]


def test_validate_refuses_a_mode_the_registry_does_not_have(make_cfg):
    with pytest.raises(DlrunError, match="mode must be one of " + ", ".join(modes.MODES)):
        validate(make_cfg("mode=nope"), {})


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_moved_module(old):
    module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old]) and module.__spec__.name == MOVED[old]


def test_a_config_saved_with_old_targets_still_builds(make_cfg):
    """A checkpoint's config from before the move names dlrunner.optim / dlrunner.schedules."""
    cfg = make_cfg("debug=smoke", "optim._target_=dlrunner.optim.sgd", "schedule=cosine",
                   "schedule._target_=dlrunner.schedules.cosine")
    job = build_job(cfg, torch.device("cpu"), print)
    assert type(job.optimizer).__name__ == "SGD" and job.schedule.lr_lambdas[0](0) == 1.0


def test_a_jobs_identity_is_the_one_it_had_before_the_move(make_cfg):
    """resume=auto finds a run started before the move: the key names the builders' former paths."""
    from dlrunner.modes.train_resume import config_key

    now = config_key(make_cfg("debug=smoke"))
    before = config_key(make_cfg("debug=smoke", "optim._target_=dlrunner.optim.adamw",
                                 "schedule._target_=dlrunner.schedules.constant",
                                 "logger.csv._target_=dlrunner.loggers.CSVLogger"))
    assert now == before and "_target_: dlrunner.optim.adamw" in now and "dlrunner.engine" not in now
