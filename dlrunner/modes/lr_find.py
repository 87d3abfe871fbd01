"""mode=lr_find: the LR range test alone (dlrunner/tricks/lr_finder.py); prints the suggestion and
writes lr_finder.png and lr_find.json."""
from __future__ import annotations

from omegaconf import OmegaConf

from dlrunner.modes import ModeRun


def run(job: ModeRun) -> float:
    from dlrunner.build import build_job, pick_device
    from dlrunner.reporting.files import write_json
    from dlrunner.tricks.lr_finder import lr_find

    cfg, run_dir, out = job.cfg, job.run_dir, job.out
    built = build_job(cfg, pick_device(str(cfg.device)), out.warn, job.choices)
    node = cfg.trick.get("lr_finder")
    opts = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    opts.pop("_target_", None)
    rule = opts.pop("rule", "valley")
    value = lr_find(built, run_dir, rule=rule, **opts)
    write_json({"suggestion": value, "rule": rule, **opts}, run_dir / "lr_find.json")
    out.info(f"suggested lr {value:.2e} ({rule}); plot: {run_dir / 'lr_finder.png'}")
    out.info(f"use it: dlrun <same overrides> optim.lr={value:.2e}  (or trick=lr_finder to do this before training)")
    return value
