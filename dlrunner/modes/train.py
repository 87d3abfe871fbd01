"""mode=train (and mode=final, which trains the same way on train+val): build the job, resume it
when asked, fit it epoch by epoch (dlrunner.engine.loop.fit), and close the run folder the same
way however training ended: completed, paused (stop_after), interrupted, diverged or crashed."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from dlrunner import watch
from dlrunner.build import Job, build_job, build_loggers, pick_device
from dlrunner.engine import checkpoint, distributed
from dlrunner.engine.loop import TrainState, fit
from dlrunner.engine.meter import Meter
from dlrunner.engine.oom import OOMGuard
from dlrunner.engine.step import NonFiniteLoss
from dlrunner.engine.stop import Interrupted, StopSignal
from dlrunner.errors import DlrunError, TrainingDiverged
from dlrunner.modes import ModeRun
from dlrunner.modes.train_finish import diverged, finish, first_batch, run_extras
from dlrunner.modes.train_resume import carry_over, config_key, find_resume
from dlrunner.reporting import plots, rundir
from dlrunner.reporting.console import Reporter
from dlrunner.reporting.files import atomic_write, write_json, write_rows
from dlrunner.reporting.loggers import Loggers
from dlrunner.reporting.painter import Painter
from dlrunner.reporting.timing import Timings

__all__ = ["Interrupted", "StopSignal", "config_key", "finish", "run", "run_epochs", "train"]


def run(job: ModeRun) -> float:
    return train(job.cfg, job.run_dir, job.choices, job.out)


def train(cfg: DictConfig, run_dir: Path, choices: dict[str, str], out: Reporter) -> float:
    """Train the configured job in run_dir and return the best value of cfg.optimized_metric.
    mode=final: train on train+val without validation, then score the test split once (final.py)."""
    t_start, timings, world = time.time(), Timings(), distributed.current()
    device = pick_device(distributed.pick_device(str(cfg.device), world))
    key, resume_path, ckpt = resume_point(cfg, run_dir, world, out)
    loggers = build_loggers(cfg.get("logger"), out.warn)  # a missing package stops here, before any work
    loggers = loggers if world.main else None  # rank 0 alone writes
    job = prepare(cfg, device, choices, out, world)
    ckdir = claim(run_dir, key, world)
    state, painter = TrainState(), Painter(out.warn)
    meter, sample = start(cfg, job, state, ckpt, resume_path, run_dir, painter, out, world)
    n_params = announce(job, run_dir, out)
    saver = checkpoint.Checkpointer(ckdir, float(cfg.checkpoint_interval)) if world.main else checkpoint.Discard()
    if loggers:
        start_loggers(loggers, cfg, job, state, run_dir, sample, resume_path)
    # out-of-memory recovery in one process (several would have to agree on it: not yet)
    oom = OOMGuard(device, out.warn) if not world.active else None
    timings.add("build", time.perf_counter() - timings.start)
    t_loop = time.perf_counter()

    def close(status: str, extra: dict | None = None) -> float:
        """The one way out: checkpoints on disk, then (rank 0) the pictures, analysis and summary.json."""
        timings.add("epochs", time.perf_counter() - t_loop - saver.seconds)  # the loop, less its checkpoint writes
        saver.flush()
        if world.main and state.history and not (ckdir / "last.pt").exists():  # resumed with nothing left to train
            saver.save_now(checkpoint.payload(job, state, meter, OmegaConf.to_yaml(cfg, resolve=True)))
        timings.add("checkpoints", saver.seconds)
        if not world.main:
            return float(state.best) if state.best is not None else float("nan")
        return finish(cfg, job, state, run_dir, t_start, status, resume_path, n_params, out, loggers,
                      extra={**(extra or {}), **run_extras(world, device, state, oom, job)},
                      timings=timings, painter=painter)

    guarded_epochs(cfg, job, state, meter, saver, run_dir, out, loggers, oom, painter, close)
    paused = state.epoch < int(cfg.epochs)  # stop_after: last.pt holds the state to continue from
    if not paused:
        job.tricks.on_train_end()
    return close("paused" if paused else "completed")


def resume_point(cfg: DictConfig, run_dir: Path, world: distributed.World,
                 out: Reporter) -> tuple[str, Path | None, dict | None]:
    """The run's config key, and the checkpoint it continues from (path and contents) if any."""
    key = config_key(cfg)
    # rank 0 alone looks (its resume.json marks the old run taken; the others must not race it)
    resume_path = distributed.on_main(lambda: find_resume(cfg, run_dir, key, out), world)
    ckpt = checkpoint.load(resume_path) if resume_path else None  # fail on a bad file before any work
    if ckpt and ckpt["config"] and config_key(OmegaConf.create(ckpt["config"])) != key:
        raise DlrunError(f"resume: {resume_path} was trained with a different config; "
                         "resume with the same overrides (see its .hydra/overrides.yaml)")
    return key, resume_path, ckpt


def claim(run_dir: Path, key: str, world: distributed.World) -> Path:
    """The run's checkpoints folder, marked with the config key (rank 0 writes it)."""
    ckdir = run_dir / "checkpoints"
    if world.main:
        ckdir.mkdir(parents=True, exist_ok=True)
        atomic_write(ckdir / "config_key.txt", lambda f: f.write(key))
        rundir.claim(run_dir, run_dir)  # a resume=auto in another terminal must not continue this run meanwhile
    return ckdir


def start_loggers(loggers: Loggers, cfg: DictConfig, job: Job, state: TrainState, run_dir: Path,
                  sample: tuple | None, resume_path: Path | None) -> None:
    """Open the trackers with the resolved config, the data, a first batch and the history so far."""
    loggers.start(run_dir, OmegaConf.to_container(cfg, resolve=True), job.data, sample, state.history,
                  resume_path.parent.parent.resolve() if resume_path else None)


def guarded_epochs(cfg: DictConfig, job: Job, state: TrainState, meter: Meter, saver: checkpoint.Checkpointer,
                   run_dir: Path, out: Reporter, loggers: Loggers | None, oom: OOMGuard | None, painter: Painter,
                   close: Callable[[str, dict | None], float]) -> None:
    """run_epochs under the stop signal. A run that training leaves by an exception is closed with
    how it ended (`close(status, extra)`) before the exception goes on; a non-finite loss goes on
    as the one-line TrainingDiverged."""
    world, device = distributed.current(), job.device
    # ranks agree on a stop every step on a CPU (cheap), every log_every steps on a GPU (a sync)
    with StopSignal(world, device, 1 if device.type == "cpu" else int(cfg.log_every)) as stop:
        try:
            run_epochs(cfg, job, state, meter, stop, saver, run_dir, out, loggers, oom, painter=painter)
        except Exception as e:  # keep the last finished epoch on disk, record how it ended, show why
            saver.flush()  # an interrupt between epochs: the finished epoch's state is still pending
            close(*ending(e, job, state, run_dir / "checkpoints", out))
            if isinstance(e, NonFiniteLoss):
                raise TrainingDiverged(f"training stopped: non-finite loss at epoch {state.epoch + 1}, step {e.step}; "
                                       f"details in {run_dir / 'summary.json'}") from None
            raise


def ending(e: Exception, job: Job, state: TrainState, ckdir: Path, out: Reporter) -> tuple[str, dict | None]:
    """summary.json's status for a run that training left by an exception, and what it says about it."""
    if isinstance(e, Interrupted):
        out.info(f"{e}: checkpoint saved at epoch {state.epoch + 1}, batch {state.batch} -> "
                 f"{ckdir / 'last.pt'}; continue with `dlrun <same overrides> resume=auto`")
        return "interrupted", None
    if isinstance(e, NonFiniteLoss):  # stop at the first NaN/Inf, name where it came from, keep the good checkpoint
        return "diverged", {"nonfinite": diverged(job, state, e, ckdir, out)}
    return "failed", None


def prepare(cfg: DictConfig, device: torch.device, choices: dict[str, str], out: Reporter,
            world: distributed.World) -> Job:
    """The built job, with this rank's share of the batches, the watchdog, and mode=final's test counter."""
    final = cfg.mode == "final"
    job = build_job(cfg, device, out.warn, choices, train_on_val=final)
    if world.active:
        job.train = distributed.ShardedBatches(job.train, world)  # after build_job: a trick may replace it there
    if cfg.get("watch", True) and world.main:  # rank 0 alone: its checks involve no other rank
        job.watch = watch.build(job, out.warn, int(cfg.get("watch_every", 10)))
    if final:
        from dlrunner.modes.final import CountedPasses

        if len(job.data.test) == 0:
            raise DlrunError(f"mode=final scores the test split, but data={job.data.name} holds none out "
                             "(data.test_fraction=0); set data.test_fraction > 0")
        job.test = CountedPasses(job.test)  # summary.json records how often the test split was read
    return job


def start(cfg: DictConfig, job: Job, state: TrainState, ckpt: dict | None, resume_path: Path | None, run_dir: Path,
          painter: Painter, out: Reporter, world: distributed.World) -> tuple[Meter, tuple | None]:
    """Continue from the checkpoint, or start afresh (samples.png, the tricks' before_fit).
    Returns the epoch's meter and the first batch shown to the loggers (None on resume)."""
    if not ckpt:
        sample = first_batch(job) if world.main else None
        if sample is not None and cfg.plots == "all":
            painter.submit("samples", plots.samples, *sample, job.data.class_names, job.data.modality,
                           run_dir / "samples.png")
        job.tricks.before_fit(run_dir)
        return Meter(job.device), sample
    meter = checkpoint.restore(job, ckpt, state)
    if not world.main:  # the saved partial-epoch sums are all ranks' together: counted once, on rank 0
        meter = Meter(job.device)
    else:
        write_json({"resumed_from": str(resume_path.parent.parent.resolve()), "epoch": state.epoch,
                    "batch": state.batch}, run_dir / "resume.json")
        carry_over(resume_path, run_dir / "checkpoints", state.history, run_dir)
    out.info(f"resumed from {resume_path} at epoch {state.epoch + 1}, batch {state.batch}")
    return meter, None


def announce(job: Job, run_dir: Path, out: Reporter) -> int:
    """The run's first console lines: data, model, device, precision, where batches live. Returns
    the model's parameter count."""
    n_params = sum(p.numel() for p in job.base_model.parameters())
    n_train = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
    trainable = f", {n_train:,} trainable" if n_train != n_params else ""
    out.info(f"dlrun: {job.data.name} {job.data.sizes()} -> {type(job.base_model).__name__} ({n_params:,} params"
             f"{trainable}) on {job.device}, {job.precision.name}; run folder {run_dir}")
    placement = job.data.extra.get("placement") or {}
    if job.device.type == "cuda" or placement.get("on_device") is False:
        out.info(f"data: {'on the device' if placement.get('on_device') else 'host -> device per batch'}"
                 f" ({placement.get('why')})")
    return n_params


def run_epochs(cfg: DictConfig, job: Job, state: TrainState, meter: Meter, stop: StopSignal,
               saver: checkpoint.Checkpointer, run_dir: Path, out: Reporter, loggers: Loggers | None = None,
               oom: OOMGuard | None = None, config_yaml: str | None = None, painter: Painter | None = None) -> None:
    """fit() with the config's values, writing metrics.csv (and with plots=all, curves.png in the
    background via `painter`) after every epoch. `config_yaml` (the resolved config every
    checkpoint carries) is made here unless the caller has it: a caller that trains one epoch per
    call passes it once."""
    world, epochs = distributed.current(), int(cfg.epochs)

    def on_epoch_end(row: dict, improved: bool) -> None:
        if world.main:
            write_rows(state.history, run_dir / "metrics.csv")
            if painter is not None and cfg.plots == "all":
                painter.submit("curves", plots.curves, list(state.history), run_dir / "curves.png")
        if loggers:
            loggers.log_epoch(row, row["epoch"], job.base_model)
        out.epoch_end(row, epochs, improved)
    # stop_after: pause after that many epochs (the schedule still spans cfg.epochs); resume continues
    fit(job, state, meter, stop, saver, out, epochs=epochs, until=min(epochs, int(cfg.get("stop_after") or epochs)),
        metric=cfg.optimized_metric, log_every=int(cfg.log_every),
        config_yaml=config_yaml or OmegaConf.to_yaml(cfg, resolve=True), on_epoch_end=on_epoch_end, oom=oom)
