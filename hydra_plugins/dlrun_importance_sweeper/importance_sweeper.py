"""The `dlrun_importance` Hydra sweeper: tiers of hyperparameters searched in order of importance
(learning rate, schedule, loss, width; then init, depth, layer parameters; then optimizer, its
parameters, batch size, activation), each stage with the earlier stages' incumbents fixed.

Trials go through whichever Hydra launcher is configured (`self.launcher.launch`), so the same
sweep runs in-process, on joblib, Ray or SLURM. The search settings live in the job config's
`sweep:` block (conf/sweep/importance.yaml), so they are overridable like any other key."""

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from rich.console import Console

from dlrunner import sweep as sw
from dlrunner.errors import DlrunError
from hydra_plugins.dlrun_importance_sweeper import placement
from hydra_plugins.dlrun_importance_sweeper.results import Results, _key
from hydra_plugins.dlrun_importance_sweeper.settings import rank_metric
from hydra_plugins.dlrun_importance_sweeper.stages import Stages

_ABSENT = object()


@dataclass
class ImportanceSweeperConf:
    _target_: str = "hydra_plugins.dlrun_importance_sweeper.importance_sweeper.ImportanceSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="dlrun_importance", node=ImportanceSweeperConf,
                             provider="dlrunner")


class StopSweep(Exception):
    """The failure budget is spent."""


def _gpus_per_ray_trial(config: DictConfig) -> None:
    """Under `hydra/launcher=ray`, every trial asks Ray for `sweep.gpus_per_trial` GPUs (auto: one when
    this machine has CUDA, else none); an explicit `hydra.launcher.ray.remote.num_gpus` wins. Without
    a GPU request Ray hides the GPUs from the trial, which would then train on the CPU."""
    launcher = config.hydra.get("launcher") or {}
    if "RayLauncher" not in str(launcher.get("_target_", "")) or "sweep" not in config:
        return
    want = config.sweep.get("gpus_per_trial", "auto")
    if want == "auto":
        import torch

        want = 1 if torch.cuda.is_available() else 0
    remote = launcher.ray.remote
    if want and "num_gpus" not in remote:
        with read_write(remote), open_dict(remote):
            remote.num_gpus = want


class ImportanceSweeper(Stages, Results, Sweeper):
    def __init__(self) -> None:
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.setup_error: DlrunError | None = None
        try:  # sweep.trials_per_gpu first: its fractional GPU request wins over gpus_per_trial's
            self.gpu_batch = placement.apply(config, [str(o) for o in config.hydra.overrides.hydra])
        except DlrunError as e:  # reported by sweep() as one line, before any trial
            self.setup_error, self.gpu_batch = e, None
        _gpus_per_ray_trial(config)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ---------------------------------------------------------------- the sweep, stage by stage
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except DlrunError as e:  # bad sweep settings: one line, before any trial runs
            print(f"dlrun: error: {e}", file=sys.stderr)
            sys.exit(2)

    def _sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        if "sweep" not in self.config:
            raise DlrunError("hydra/sweeper=dlrun_importance needs a `sweep:` block: use `sweep=importance`")
        if getattr(self, "setup_error", None):
            raise self.setup_error
        self.s = OmegaConf.to_container(self.config.sweep, resolve=True)
        self.base = self._check_arguments(arguments)
        self.fixed = {_key(a) for a in self.base}
        self.space = sw.read_space(self.s.get("space"), self.s.get("groups"))
        self.groups = set(self.s.get("groups") or {})
        self.metric = rank_metric(self.s.get("rank_by"), str(self.config.optimized_metric))
        self.lower = "loss" in self.metric
        # every trial optimizes the ranked metric (its best epoch, the value it returns); the job's own
        # optimized_metric stays in best.yaml's command line
        self.rank_args = [] if self.metric == str(self.config.optimized_metric) else [f"optimized_metric={self.metric}"]
        self.seeds = [int(x) for x in self.s.get("seeds") or [0]]
        self.console = Console(highlight=False, record=True, soft_wrap=True)  # a command line stays one line in a log
        given = [int(a.split("=", 1)[1]) for a in self.base if _key(a) == "seed"]
        if given and given[-1] != self.seeds[0]:  # `seed=N` on the command line: the searches use it
            self.seeds = [given[-1]] + [x for x in self.seeds if x != given[-1]][: len(self.seeds) - 1]
            self.console.print(f"seed={given[-1]} given: searches use seed {self.seeds[0]}"
                               + (f", confirmations seed {self.seeds[1]}" if len(self.seeds) > 1 else ""))

        self.dir = Path(self.config.hydra.sweep.dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pin_sweep_dir()
        OmegaConf.save(self.config, self.dir / "multirun.yaml")
        self.csv = self.dir / "trials.csv"
        self._check_same_sweep()
        self.done = sw.read_trials(self.csv)
        self._recover_finished_runs()
        if self.done:
            self.console.print(f"resuming {self.dir}: {len(self.done)} trials already in trials.csv")
        self.job_idx = 1 + max([t.trial for t in self.done.values()] +
                               [int(p.name) for p in self.dir.iterdir() if p.name.isdigit()] + [-1])
        self.trials: list[sw.Trial] = []
        self._composed: dict[tuple[str, ...], Any] = {}
        self._losses: dict[str, float] = {}  # run folder: val/loss at its best epoch (the tie-break)
        self.stages: list[dict[str, Any]] = []
        self.params: dict[str, sw.Param] = {}
        stopped = ""
        try:
            self._run_all()
        except StopSweep as e:
            stopped = str(e)
            self.console.print(f"[red]sweep stopped: {e}[/red]")
        self._finish(stopped)
        return [self.trials]

    # ---------------------------------------------------------------- trials
    def _trial(self, stage: str, rnd: int, seed: int, point: dict[str, Any]) -> sw.Trial:
        """Incumbent + point; keys the chosen groups do not have (optim.beta1 under sgd) dropped."""
        values = {**self.inc["values"], **{k: sw.fmt(v) for k, v in point.items()}} if stage != "baseline" else {}
        t = sw.Trial(stage, rnd, seed, values)
        try:  # composing with the group choices alone is enough: the other keys are checked to exist
            cfg = self._compose({k: v for k, v in values.items() if k in self.groups})
            t.values = {k: v for k, v in values.items()
                        if k in self.groups or OmegaConf.select(cfg, k, default=_ABSENT) is not _ABSENT}
        except Exception as e:  # an override the config cannot take: recorded as a failed trial
            t.status, t.error = "failed", _one_line(e)
        return t

    def _run(self, trials: list[sw.Trial]) -> None:
        todo = []
        for t in trials:
            old = self.done.get(t.key)
            if old is not None:
                t.trial, t.metric, t.time, t.status, t.error, t.run_dir = (
                    old.trial, old.metric, old.time, old.status, old.error, old.run_dir)
            elif t.status == "pending":
                todo.append(t)
        if todo:
            failed = sum(1 for t in self.trials if t.status == "failed")
            limit = int(self.s.get("max_failures", 5))
            if failed >= limit:
                raise StopSweep(f"{failed} failed trials (sweep.max_failures={limit})")
            skip = {"seed", *(_key(a) for a in self.rank_args)}
            jobs = [[a for a in self.base if _key(a) not in t.values and _key(a) not in skip] + t.overrides
                    + self.rank_args for t in todo]
            if getattr(self, "gpu_batch", None):  # sweep.trials_per_gpu: local workers spread over the GPUs
                where = placement.devices(placement.launcher_kind(self.config), len(jobs), placement.cuda_count())
                jobs = [j + d for j, d in zip(jobs, where)]
            tic = time.perf_counter()
            results = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
            per_job = (time.perf_counter() - tic) / len(todo)
            for i, (t, r) in enumerate(zip(todo, results)):
                t.trial = self.job_idx + i
                self._record(t, r, per_job)
            self._launched(todo, time.perf_counter() - tic)
            self.job_idx += len(todo)
        for t in trials:
            if t.trial < 0:  # failed before launch (composition)
                t.trial, self.job_idx = self.job_idx, self.job_idx + 1
        self.trials.extend(trials)
        sw.write_trials(self.csv, self.trials)

    def _record(self, t: sw.Trial, r: Any, per_job: float) -> None:
        t.time = per_job
        try:
            t.run_dir = str(r.hydra_cfg.hydra.runtime.output_dir)
            summary = json.loads((Path(t.run_dir) / "summary.json").read_text())
            t.time = float(summary.get("wall_time", per_job))
        except Exception:  # no summary (a crash before training): the batch's mean time
            pass
        if r.status == JobStatus.COMPLETED:
            value = r._return_value
            try:
                t.metric = float(value)
            except (TypeError, ValueError):
                t.metric = float("nan")
            t.status, t.error = ("completed", "") if math.isfinite(t.metric) else ("failed", f"non-finite metric {value}")
        else:
            t.status, t.error = "failed", _one_line(r._return_value)

    def _check_same_sweep(self) -> None:
        """A sweep dir resumes only the same job: trials of other overrides (epochs=20 vs 5) must not
        be mixed in. `sweep.*` settings may change (a larger budget extends the sweep)."""
        # (a sweep ranked by another metric than its job's: that metric's trials are not comparable)
        job = sorted(a for a in self.base if not _key(a).startswith(("sweep", "hydra")) and not
                     (self.rank_args and _key(a) == "optimized_metric")) + self.rank_args
        saved = self.dir / "sweep_job.yaml"
        if saved.exists() and self.csv.exists():
            before = [str(a) for a in OmegaConf.load(saved)]
            if before != job:
                hint = ""
                if {_key(a) for a in set(before) ^ set(job)} == {"optimized_metric"}:  # only the ranking differs
                    was = next((a.split("=", 1)[1] for a in before if _key(a) == "optimized_metric"),
                               str(self.config.optimized_metric))
                    hint = f", or sweep.rank_by={was} (the metric it ranked by)"
                raise DlrunError(f"{self.dir} holds a sweep of other job overrides ({' '.join(before) or 'none'} "
                                 f"vs {' '.join(job) or 'none'}): give another hydra.sweep.dir{hint}")
        OmegaConf.save(OmegaConf.create(job), saved)

    def _pin_sweep_dir(self) -> None:
        """Every job gets the resolved folder: launchers that compose jobs in other processes
        (joblib, Ray, submitit) neither know dlrun's resolvers nor should pick a new unique name."""
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweep.dir = str(self.dir)
            self.config.hydra.overrides.hydra.append(f"hydra.sweep.dir={self.dir}")

    def _recover_finished_runs(self) -> None:
        """Trials that completed after the last write of trials.csv (the sweep was killed while a
        batch ran): their run folders hold the overrides and a completed summary.json."""
        known = {t.run_dir for t in self.done.values()}
        for d in sorted(p for p in self.dir.iterdir() if p.name.isdigit()):
            summary, over = d / "summary.json", d / ".hydra" / "overrides.yaml"
            if str(d.resolve()) in known or not (summary.exists() and over.exists()):
                continue
            try:
                info = json.loads(summary.read_text())
                args = [str(a) for a in OmegaConf.load(over)]
            except Exception:  # a half-written file: the trial runs again
                continue
            if info.get("status") not in ("completed", "paused") or info.get("value") is None:
                continue
            values = {_key(a): a.split("=", 1)[1] for a in args
                      if a not in self.base and a not in self.rank_args and _key(a) != "seed"}
            seed = next((int(a.split("=", 1)[1]) for a in args if _key(a) == "seed"), self.seeds[0])
            t = sw.Trial("?", -1, seed, values, int(d.name), float(info["value"]),
                         float(info.get("wall_time") or 0), "completed", "", str(d.resolve()))
            self.done.setdefault(t.key, t)

    # ---------------------------------------------------------------- helpers
    def _compose(self, values: dict[str, str]) -> DictConfig:
        """The job config for these overrides (cached: composing takes a noticeable fraction of a second)."""
        over = [a for a in self.base if _key(a) not in values] + [f"{k}={v}" for k, v in sorted(values.items())]
        sig = tuple(over)
        if sig not in self._composed:
            try:
                self._composed[sig] = self.hydra_context.config_loader.load_sweep_config(
                    master_config=self.config, sweep_overrides=over)
            except Exception as e:
                self._composed[sig] = e
        if isinstance(self._composed[sig], Exception):
            raise self._composed[sig]
        return self._composed[sig]

    def _absolute(self, p: sw.Param) -> sw.Param:
        """A `{times: [lo, hi]}` range around the value the selected config (groups included) has."""
        if not p.relative:
            return p
        groups = {k: v for k, v in self.inc["values"].items() if k in self.groups}
        return p.around(OmegaConf.select(self._compose(groups), p.key))

    def _exists(self, key: str, stage_keys: list[str]) -> bool:
        """A group, or a key of the incumbent's config, or of one of the choices of a group searched
        in the same stage (optim.momentum exists once optim=sgd is on the grid)."""
        if key in self.groups:
            return True
        groups = {k: v for k, v in self.inc["values"].items() if k in self.groups}
        variants = [groups] + [{**groups, g: c} for g in stage_keys if g in self.groups
                               and key.startswith(g + ".") for c in self.space[g].choices]
        for v in variants:
            try:
                if OmegaConf.select(self._compose(v), key, default=_ABSENT) is not _ABSENT:
                    return True
            except Exception:  # a choice that does not compose is reported on its own trial
                continue
        return False

    def _check_arguments(self, arguments: list[str]) -> list[str]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for o in parser.parse_overrides(arguments):
            if o.is_sweep_override():
                raise DlrunError(f"`{o.input_line}`: the importance sweep takes its search space from "
                                 f"sweep.space (e.g. sweep.space.optim.lr=[1e-5,1e-1]), not a Hydra sweep list")
        return list(arguments)

    def _sign(self, d: float) -> float:
        return -d if self.lower else d

    def _better(self, a: float, b: float) -> bool:
        return self._sign(a - b) > 0

    def _best(self, trials: list[sw.Trial]) -> sw.Trial | None:
        ok = [t for t in trials if t.ok]
        return min(ok, key=self._rank) if ok else None

    def _rank(self, t: sw.Trial) -> tuple[float, float]:
        """Sorts the best trial first: its metric, then among equal metrics the lower val/loss at the
        run's best epoch. An accuracy on a few hundred validation samples ties often (16 whole runs at
        591/600 in a 30-minute MNIST-1D sweep); the loss still tells them apart."""
        return (self._sign(-t.metric), self._loss(t))

    def _loss(self, t: sw.Trial) -> float:
        if self.lower or not t.run_dir:  # a loss metric is its own tie-break
            return 0.0
        if t.run_dir not in self._losses:
            try:
                best = json.loads((Path(t.run_dir) / "summary.json").read_text()).get("best") or {}
                loss = float(best["val/loss"])
                self._losses[t.run_dir] = loss if math.isfinite(loss) else math.inf
            except (OSError, ValueError, KeyError, TypeError):  # no summary or no val/loss: after those with one
                self._losses[t.run_dir] = math.inf
        return self._losses[t.run_dir]


def _one_line(e: Any) -> str:
    text = f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e)
    return " ".join(text.split())[:300]
