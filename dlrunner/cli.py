"""`dlrun`: the Hydra app. Validates the config, then runs the selected mode (dlrunner.modes)."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dlrunner import fasthelp
from dlrunner.conf_lists import CONF
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError, TrainingDiverged
from dlrunner.reporting.rundir import discard_unstarted, register_resolvers

CONF_DIR = str(CONF)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> float | None:
    from dlrunner import modes
    from dlrunner.engine import distributed
    from dlrunner.engine.stop import Interrupted
    from dlrunner.validate import validate

    out = Reporter()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    choices = dict(hc.runtime.choices)
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    devices = devices if isinstance(devices, int) and cfg.get("mode") == "train" else 1  # else: validate says why
    if _in_importance_sweep(hc) and OmegaConf.select(cfg, "sweep.threads_per_trial", default=None):
        import torch  # the same CPU threads under every launcher: reductions sum in a thread-dependent order

        torch.set_num_threads(int(cfg.sweep.threads_per_trial))
    try:
        validate(cfg, choices)  # before other processes start: a bad value is reported once
        with distributed.session(devices, run_dir, list(hc.overrides.task)) as world:
            if not world.main:
                out.console.quiet = True  # rank 0 reports
            return modes.run(modes.ModeRun(cfg, run_dir, choices, out, hc))
    except DlrunError as e:
        print(f"dlrun: error: {e}", file=sys.stderr)
        if _in_importance_sweep(hc):  # the sweeper records the failed trial and goes on
            raise
        if not isinstance(e, TrainingDiverged) and not hc.mode.name == "MULTIRUN":
            discard_unstarted(run_dir, cfg.get("out_dir"))  # refused before any work: no half-written run folder
        sys.exit(3 if isinstance(e, TrainingDiverged) else 2)
    except Interrupted as e:
        sys.exit(128 + e.signum)


def _in_importance_sweep(hc) -> bool:
    """A job of `sweep=importance`: errors are raised to the sweeper, not turned into an exit."""
    return "dlrun_importance" in str(hc.sweeper.get("_target_", ""))


def main() -> None:
    """Console-script entry point: `dlrun [overrides]`, then a quick exit (dlrunner.quickexit)."""
    from dlrunner.quickexit import exit_now

    try:
        launch()
    except SystemExit as e:
        exit_now(e.code)
    exit_now(0)


def launch() -> None:
    """Parse the command line and run the Hydra app (may raise SystemExit)."""
    if "--version" in sys.argv[1:]:  # dlrunner's, torch's and CUDA's before Hydra's (dlrunner/version.py)
        from dlrunner.version import version_text

        print(version_text())
        return
    if os.getcwd() not in sys.path:  # a user's own `_target_` module in the current folder
        sys.path.insert(0, os.getcwd())
    register_resolvers()
    if any(a in fasthelp.HELP_FLAGS for a in sys.argv[1:]):
        fasthelp.share_group_listing()
    warnings.formatwarning = lambda msg, category, *args, **kw: f"warning: {msg}\n"  # one line, no source
    # an importance sweep resumes in the folder it is given (hydra.sweep.dir=DIR), so that one is kept as is
    resumable = any(a.split("=", 1)[0] == "sweep" for a in sys.argv[1:])
    sys.argv = [a if resumable and a.startswith("hydra.sweep.dir=") else _unique(a) for a in sys.argv]
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # a rank of a data-parallel run: rank 0 names the run folder
        from dlrunner.engine.distributed import join_run_dir

        join_run_dir()
    app()


def _unique(arg: str) -> str:
    """A user's own hydra.run.dir / hydra.sweep.dir gets the same never-overwrite guard."""
    key, eq, value = arg.partition("=")
    if eq and key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and "dlrun_unique_dir" not in value:
        return f"{key}=${{dlrun_unique_dir:{value}}}"
    return arg


if __name__ == "__main__":
    main()
