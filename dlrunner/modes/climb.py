"""mode=climb: train the model ladder rung by rung with the same budget and stop when the next rung
no longer pays; every rung's run is kept (the guides' "keep a copy of each simpler working version").

Each rung is an ordinary training run of the job as configured plus that rung's overrides
(`model=resnet`, or a list such as `[model=mlp, model.depth=3]`), launched as its own `dlrun`
process into `<run dir>/rungs/NN-name/`: its own checkpoints, metrics, summary.json and
.hydra/, and a crash, an out-of-memory or a NaN there is recorded without taking the climb down.
Rung 1 is trained, then each next one; a rung that does not beat the best so far by more than
`climb.min_gain` ends the climb, and the best rung (the simplest at that level) is chosen."""
from __future__ import annotations

import csv
import hashlib
import signal
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlrunner.reporting import rundir
from dlrunner.reporting.console import Reporter
from dlrunner.reporting.files import atomic_write, write_json
from dlrunner.errors import DlrunError
from dlrunner.modes import ModeRun
from dlrunner.modes.climb_rung import Launcher, Result, Rung, earlier_rungs
from dlrunner.modes.climb_rung import override_key as _key

RUNG_KEYS = ("mode", "resume", "climb")  # command-line keys the rungs do not inherit
CSV_FIELDS = ["rung", "label", "overrides", "status", "params", "metric", "gain", "time", "reused", "run_dir",
              "checkpoint", "error"]


def default_ladder(kind: str) -> list[list[str]]:
    """The rungs for a modality: the model ladder of model=auto (models/layers.py), and for tabular
    data, whose ladder is the MLP alone, deeper MLPs."""
    from dlrunner.models.layers import ladder

    rungs = [[f"model={name}"] for name in ladder(kind)]
    if kind == "tabular":
        rungs += [["model=mlp", f"model.depth={d}"] for d in (2, 3)]
    return rungs


def parse_ladder(spec: Any) -> list[list[str]]:
    """`climb.ladder` as lists of overrides. A rung is a model config name (`resnet` ->
    [model=resnet]), a list of overrides (`[model=mlp, model.depth=3]`, in a YAML file) or a mapping
    (`{model: mlp, model.depth: 3}`, which needs no escaped `=` on the command line). One line for
    anything else."""
    if isinstance(spec, (ListConfig, DictConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, list) or not spec:
        raise DlrunError(f"climb.ladder must be null (the data's ladder) or a non-empty list of rungs, got {spec!r}")
    rungs = []
    for i, item in enumerate(spec, 1):
        if isinstance(item, dict):
            items = [f"{k}={_value(v)}" for k, v in item.items()]
        elif isinstance(item, str) and "=" not in item and not item.startswith("~"):
            items = [f"model={item.strip()}"]
        else:
            items = item if isinstance(item, list) else [item]
        if not items or not all(isinstance(o, str) and o.strip() for o in items):
            raise DlrunError(f"climb.ladder: rung {i} must be a model config name (resnet), a list of overrides "
                             f"([model=mlp,model.depth=3]) or a mapping ({{model: mlp, model.depth: 3}}), got {item!r}")
        bad = [o for o in items if "=" not in o and not o.startswith("~")]
        if bad:
            raise DlrunError(f"climb.ladder: rung {i}: {bad[0]!r} is not an override (key=value)")
        rungs.append([o.strip() for o in items])
    return rungs


def _value(v: Any) -> str:
    """A config value as Hydra's override grammar reads it back."""
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def ascend(rungs: list[Rung], train: Callable[[Rung], Result], min_gain: float, lower: bool,
           note: Callable[[str], None]) -> tuple[list[Result], Result | None, str]:
    """The stop rule. Train rung 1, then each next rung while it beats the best so far by more than
    `min_gain` (`lower`: the metric must fall by it). A rung that fails before any rung has worked
    is passed over; one that fails after ends the climb. Returns (results, best, why it stopped)."""
    results: list[Result] = []
    best: Result | None = None
    for rung in rungs:
        r = train(rung)
        results.append(r)
        if r.status == "interrupted":
            return results, best, f"interrupted in rung {r.rung} ({r.label})"
        if not r.ok:
            if best is None:
                note(f"climb: rung {r.rung} ({r.label}) {r.status}; no rung has worked yet, trying the next one")
                continue
            return results, best, f"rung {r.rung} ({r.label}) {r.status}; the climb stops at the best so far"
        if best is None:
            best = r
            continue
        r.gain = (best.value - r.value) if lower else (r.value - best.value)
        if r.gain > min_gain:
            best = r
            continue
        return results, best, (f"rung {r.rung} ({r.label}) gained {r.gain:+.4f} over rung {best.rung} "
                               f"({best.label}), not more than climb.min_gain={min_gain:g}")
    return results, best, "the top of the ladder"


# --- planning: every rung composed and checked before any training --------------------------------

def plan(cfg: DictConfig, hc: Any, note: Callable[[str], None]) -> tuple[list[Rung], str]:
    """The rungs, each composed (as its run will be) and validated: an unknown rung or a bad
    override is one line here. Returns the rungs and where the ladder came from."""
    spec = OmegaConf.select(cfg, "climb.ladder", default=None)
    if spec is None:
        kind = _modality(cfg)
        ladder, source = default_ladder(kind), f"the {kind} ladder"
    else:
        ladder, source = parse_ladder(spec), "climb.ladder"
    user = [o for o in hc.overrides.task if _key(o).split(".")[0] not in RUNG_KEYS]
    current = str(dict(hc.runtime.choices).get("model", "model"))
    if any(_key(o) == "model" for o in user) and any(_key(o) == "model" for r in ladder for o in r):
        note("climb: the command line's model= is replaced by each rung's model")
    rungs = []
    for i, own in enumerate(ladder, 1):
        rungs.append(_compose_rung(hc.job.config_name, i, own, user, current, note))
    return rungs, source


def _modality(cfg: DictConfig) -> str:
    """The data's modality, found the way model=auto finds it (from one sample's shape)."""
    from dlrunner.build import build_data
    from dlrunner.models.layers import modality

    return modality(build_data(cfg.data, note=lambda _: None).in_shape)


_ABSENT = object()  # OmegaConf.select's answer for a key the config does not have


def _compose_rung(config_name: str, index: int, own: list[str], user: list[str], current: str,
                  note: Callable[[str], None]) -> Rung:
    from hydra import compose

    from dlrunner.modes.train import config_key
    from dlrunner.validate import validate

    switches = any(_key(o) == "model" for o in own)
    group = next((o.split("=", 1)[1] for o in own if _key(o) == "model"), current)
    rest = [o.removeprefix("model.") for o in own if _key(o) != "model"]
    label = " ".join([group, *rest])
    fixed = ["mode=train", "resume=null"]
    keep = [o for o in user if not (switches and (_key(o) == "model" or _key(o).startswith("model.")))]
    try:
        if switches:  # the command line's model.* keys go where the rung's model has them
            base = compose(config_name, overrides=[*keep, *own, *fixed])
            for o in (o for o in user if _key(o).startswith("model.")):
                if o.startswith("+") or OmegaConf.select(base, _key(o), default=_ABSENT) is not _ABSENT:
                    keep.append(o)
                else:
                    note(f"climb: rung {index} ({label}) has no {_key(o)}; {o} is left out there")
        overrides = [*keep, *own]
        composed = compose(config_name, overrides=[*overrides, *fixed])
        validate(composed)
    except DlrunError as e:
        raise DlrunError(f"climb.ladder: rung {index} ({label}): {e}") from None
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors (unknown config, bad key), one line
        msg = " ".join(str(e).split("Config search path")[0].split())  # Hydra's message, less the search path
        raise DlrunError(f"climb.ladder: rung {index} ({label}): {msg}") from None
    return Rung(index, own, overrides, label, config_key(composed))


# --- the mode --------------------------------------------------------------------------------------

def climb(cfg: DictConfig, run_dir: Path, hc: Any, out: Reporter) -> float:
    """mode=climb: plan and check every rung, train them in order until one no longer pays, write
    climb.json and climb.csv, print the table; returns the chosen rung's metric."""
    from dlrunner.engine.metric import minimize
    from dlrunner.engine.stop import Interrupted
    from dlrunner.modes.train_resume import config_key

    metric, lower, min_gain = str(cfg.optimized_metric), minimize(str(cfg.optimized_metric)), float(cfg.climb.min_gain)
    rungs, source = plan(cfg, hc, out.info)
    key = hashlib.sha256(config_key(cfg).encode()).hexdigest()[:16]  # the job's identity (resume=auto)
    old, earlier = earlier_rungs(cfg, run_dir, key)
    if cfg.resume is not None:
        out.info(f"climb: reusing the rungs of {old}" if old else
                 "climb: resume=auto found no earlier climb with this config; starting afresh")
    out.info(f"climb: {len(rungs)} rungs ({source}): " + " -> ".join(r.label for r in rungs)
             + f"; stop when a rung gains no more than {min_gain:g} in {metric}")
    record = {"status": "running", "optimized_metric": metric, "minimize": lower, "min_gain": min_gain,
              "ladder": source, "key": key, "command": rundir.command_line(), "resumed_from": str(old) if old else None}
    done: list[Result] = []

    def train(rung: Rung) -> Result:
        done.append(launcher(rung))
        write(run_dir, record, done, rungs, None)  # the record so far, in case the climb is stopped
        return done[-1]

    with Launcher(hc, run_dir, metric, earlier, len(rungs), out.info) as launcher:
        results, best, stopped = ascend(rungs, train, min_gain, lower, out.warn)
    interrupted = launcher.signum is not None or results[-1].status == "interrupted"
    record |= {"status": "interrupted" if interrupted else "completed" if best else "failed", "stopped": stopped}
    write(run_dir, record, results, rungs, best)
    out.console.print(table(results, rungs, best, metric, interrupted))
    if interrupted:
        out.info(f"climb: {stopped}; `dlrun <same overrides> resume={run_dir}` goes on from there "
                 "(finished rungs are not trained again)")
        raise Interrupted(launcher.signum or signal.SIGINT)
    if best is None:
        last = results[-1]
        raise DlrunError(f"climb: no rung completed ({last.status}: {last.error or 'see its run folder'}); "
                         f"details in {run_dir / 'climb.json'}")
    out.info(f"climb: chose rung {best.rung} ({best.label}), {metric} {best.value:.4f}; stopped: {stopped}")
    out.info(f"  checkpoint: {best.checkpoint}\n  record: {run_dir / 'climb.json'}, {run_dir / 'climb.csv'}")
    return float(best.value)


def write(run_dir: Path, record: dict, results: list[Result], rungs: list[Rung], best: Result | None) -> None:
    """climb.json (the whole record) and climb.csv (one row per rung), rewritten after every rung."""
    trained = {r.rung for r in results}
    rows = [asdict(r) for r in results]
    rest = [{"rung": g.index, "label": g.label, "overrides": g.own} for g in rungs if g.index not in trained]
    record = {**record, "chosen": asdict(best) if best else None, "rungs": rows, "not_trained": rest}
    write_json(record, run_dir / "climb.json")

    def write_csv(f) -> None:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({**row, "overrides": " ".join(row["overrides"]), "metric": row["value"]})
    atomic_write(run_dir / "climb.csv", write_csv)


def table(results: list[Result], rungs: list[Rung], best: Result | None, metric: str, interrupted: bool = False):
    from rich.table import Table

    caption = None if best is None else "* the best so far" if interrupted else "* the chosen rung"
    t = Table(title="climb", caption=caption)
    for col in ("rung", "model", "params", metric, "gain", "time", "status"):
        t.add_column(col, justify="left" if col in ("model", "status") else "right")
    for r in results:
        mark = " *" if best is not None and r.rung == best.rung else ""
        status = r.status + (" (reused)" if r.reused else "") + (f": {r.error[:70]}" if r.error else "")
        t.add_row(str(r.rung), r.label, f"{r.params:,}" if r.params else "-",
                  (f"{r.value:.4f}" if r.ok else "-") + mark, f"{r.gain:+.4f}" if r.gain is not None else "",
                  f"{r.time:.1f}s", status)
    trained = {r.rung for r in results}
    for g in rungs:
        if g.index not in trained:
            t.add_row(str(g.index), g.label, "", "", "", "", "[dim]not trained[/dim]")
    return t


def run(job: ModeRun) -> float:
    return climb(job.cfg, job.run_dir, job.hydra, job.out)
