"""`dlrun-preset SWEEP_DIR NAME`: keep an importance sweep's winner as a recipe, `dlrun experiment=NAME`.

The preset holds everything the winner needs: the overrides the sweep itself was started with (its
`sweep_job.yaml`: `data=mnist1d model=conv1d epochs=10`, ...) and the values it picked (importance.json's
`best`, the same values as its best.yaml), as one `# @package _global_` file in `conf/experiment/`
(or CONFIG_DIR/experiment/ with `--config-dir`, used as `dlrun --config-dir CONFIG_DIR experiment=NAME`).
Its header says where the figure comes from: the sweep's mean over its seeds, with the device, threads
and torch version its trials recorded. The file is composed once before the command returns.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from dlrunner.errors import DlrunError
from dlrunner.reporting.files import atomic_write
from dlrunner.validate import CONF as CONF_DIR
from dlrunner.validate import check_preset
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SKIPPED = ("seed", "sweep", "hydra", "experiment")  # the sweep's own settings; seeds vary by design


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def sweep_values(sweep_dir: Path) -> tuple[dict[str, str], dict]:
    """The winner's full set of overrides (the sweep's job overrides, then its picks) and importance.json."""
    imp_path = sweep_dir / "importance.json"
    if not imp_path.is_file():
        raise DlrunError(f"{sweep_dir} holds no importance.json: not the folder of a finished `dlrun -m sweep=importance`")
    imp = json.loads(imp_path.read_text())
    if not imp.get("best"):
        raise DlrunError(f"{imp_path}: the sweep has no best trial (every trial failed?)")
    job_path = sweep_dir / "sweep_job.yaml"
    job = [str(a) for a in OmegaConf.load(job_path)] if job_path.is_file() else []
    for a in job:
        if a.startswith("~") or "=" not in a:
            raise DlrunError(f"the sweep's override {a!r} (in {job_path}) cannot be written as a preset value")
        if _key(a) == "experiment":
            raise DlrunError(f"the sweep started from {a}: save the winner with `dlrun-preset` from a sweep of "
                             "plain overrides, or add its values to that preset by hand")
    values = {_key(a): a.split("=", 1)[1] for a in job if not _key(a).startswith(SKIPPED)}
    return {**values, **{str(k): str(v) for k, v in imp["best"]["values"].items()}}, imp


def measured_on(sweep_dir: Path, imp: dict) -> str:
    """Device, threads and torch version as the winner's first trial recorded them."""
    trial = str(imp["best"]["trials"][0])
    run_dir = sweep_dir / trial
    if (sweep_dir / "trials.csv").is_file():
        with (sweep_dir / "trials.csv").open() as f:
            run_dir = next((Path(r["run_dir"]) for r in csv.DictReader(f) if r["trial"] == trial), run_dir)
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "the machine that ran the sweep (its trial summary is missing)"
    threads = s.get("threads")
    return (f"{s.get('device', '?')}, {threads} thread{'s' if threads != 1 else ''}, "
            f"torch {s.get('versions', {}).get('torch', '?')}, {s.get('versions', {}).get('platform', '?')}")


def preset_text(name: str, sweep_dir: Path, values: dict[str, str], imp: dict, groups: set[str]) -> str:
    from dlrunner.sweep_report import best_yaml

    metric, best = imp.get("optimized_metric", "val/acc"), imp["best"]
    seeds = ", ".join(str(s) for s in best.get("seeds", []))
    when = dt.date.fromtimestamp((sweep_dir / "importance.json").stat().st_mtime).isoformat()
    body = best_yaml(values, groups, metric, best["metric"], "").split("\n", 3)[3]  # without its 3 header lines
    picks = " ".join(f"{k}={v}" for k, v in sorted(best["values"].items())) or "the defaults"
    job = " ".join(f"{k}={v}" for k, v in values.items() if k not in best["values"]) or "the defaults"
    head = ["# @package _global_",
            f"# {name}: the importance sweep's pick, saved with `dlrun-preset {sweep_dir} {name}`.",
            f"# For: {job}, as the sweep tuned it: {picks}",
            f"# Reaches: {metric} {best['metric']:.4f} (mean of seeds {seeds}) in the sweep {sweep_dir} "
            f"({imp.get('trials', '?')} trials), {when}",
            f"# Measured on: {measured_on(sweep_dir, imp)}",
            f"# Run: dlrun experiment={name}   (overrides compose: dlrun experiment={name} epochs=40)"]
    return "\n".join(head) + "\n" + body


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def save(sweep_dir: Path, name: str, config_dir: Path = CONF_DIR, force: bool = False) -> Path:
    """Write CONFIG_DIR/experiment/NAME.yaml from the sweep's winner; returns its path."""
    if not NAME.match(name):
        raise DlrunError(f"preset name {name!r}: letters, digits, _ . - only (it becomes experiment={name})")
    sweep_dir = Path(sweep_dir)
    values, imp = sweep_values(sweep_dir)
    path = Path(config_dir) / "experiment" / f"{name}.yaml"
    if path.exists() and not force:
        raise DlrunError(f"{path} exists; pass --force to replace it")
    groups = {d.name for d in CONF_DIR.iterdir() if d.is_dir()}
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else None
    write_text(path, preset_text(name, sweep_dir, values, imp, groups))
    try:
        check_preset(Path(config_dir), name)  # compose it as dlrun would: a broken preset is caught now
    except DlrunError:
        write_text(path, old) if old is not None else path.unlink()
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    """Console script `dlrun-preset`."""
    p = argparse.ArgumentParser(prog="dlrun-preset", description="Save an importance sweep's winner as a preset: "
                                "CONFIG_DIR/experiment/NAME.yaml, run with `dlrun experiment=NAME`.")
    p.add_argument("sweep_dir", type=Path, help="the sweep's folder (hydra.sweep.dir; holds importance.json)")
    p.add_argument("name", help="the preset's name: dlrun experiment=NAME")
    p.add_argument("--config-dir", type=Path, default=CONF_DIR,
                   help="write CONFIG_DIR/experiment/NAME.yaml (default: dlrunner's conf/; another folder is used "
                        "as `dlrun --config-dir CONFIG_DIR experiment=NAME`)")
    p.add_argument("--force", action="store_true", help="replace an existing preset of that name")
    args = p.parse_args(argv)
    try:
        path = save(args.sweep_dir, args.name, args.config_dir, args.force)
    except DlrunError as e:
        print(f"dlrun-preset: error: {e}", file=sys.stderr)
        return 2
    custom = "" if Path(args.config_dir).resolve() == CONF_DIR.resolve() else f" --config-dir {args.config_dir}"
    print(f"wrote {path}; run it: dlrun{custom} experiment={args.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
