"""One run, start to finish: build, (resume), train epoch by epoch, write the run folder."""
from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dlrunner.reporting import analysis, plots, rundir

from dlrunner.engine import checkpoint, distributed

from dlrunner import watch
from dlrunner.build import Job, build_job, pick_device
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError, TrainingDiverged
from dlrunner.reporting.loggers import Loggers, build_loggers
from dlrunner.engine.loop import Meter, NonFiniteLoss, Throughput, TrainState, evaluate, train_epoch
from dlrunner.engine.oom import OOMGuard
from dlrunner.reporting.painter import Painter
from dlrunner.reporting.timing import Timings
from dlrunner.reporting.verdict import final_verdict, fit_verdict

IGNORED_FOR_RESUME = ("resume", "mode", "ckpt", "split", "log_every", "plots", "stop_after", "out_dir", "checkpoint_interval", "eval_test",
                      "logger", "dir", "sort", "csv", "input", "format", "doctor", "climb",
                      "trainer",  # the device count: data.batch_size is global, so a run resumes on any count
                      "watch", "watch_every")  # the watchdog only reads the run


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (a second Ctrl-C kills).

    Data parallel: every rank must stop after the same step (DDP steps together), so the flag is
    only answered every `every` checks, with the largest signal number any rank received; every
    rank makes the same checks in the same order, so they all stop at the same one."""

    def __init__(self, world: distributed.World = distributed.SINGLE, device: torch.device | None = None,
                 every: int = 1):
        self.signum: int | None = None
        self._old = {}
        self.world, self.device, self.every, self.calls = world, device or torch.device("cpu"), max(1, every), 0

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            signal.signal(signum, self._old[signum])
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self) -> bool:
        if not self.world.active:
            return self.signum is not None
        self.calls += 1
        if self.calls % self.every:
            return False
        t = torch.tensor([float(self.signum or 0)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        if t.item():
            self.signum = int(t.item())
        return bool(t.item())


def config_key(cfg: DictConfig) -> str:
    """The job's identity for resume=auto: the resolved config minus run-control keys. A mode=final
    run keeps its mode: it trains on train+val, never the same job as an ordinary run."""
    d = OmegaConf.to_container(cfg, resolve=True)
    final = d.get("mode") == "final"
    for k in IGNORED_FOR_RESUME:
        d.pop(k, None)
    for k in ("on_device", "num_workers", "root"):  # where batches come from, not what they hold
        (d.get("data") or {}).pop(k, None)
    if final:
        d["mode"] = "final"
    return OmegaConf.to_yaml(OmegaConf.create(d))


def minimize(metric: str) -> bool:
    return "loss" in metric


def payload(job: Job, state: TrainState, meter: Meter, config_yaml: str) -> dict[str, Any]:
    return {"model": job.base_model.state_dict(), "optimizer": job.optimizer.state_dict(),
            "schedule": job.schedule.state_dict(), "precision": job.precision.state_dict(),
            "tricks": job.tricks.state_dict(), "rng": checkpoint.rng_state(), "meter": meter.state_dict(),
            "state": {"epoch": state.epoch, "batch": state.batch, "step": state.step, "history": state.history,
                      "best": state.best, "best_epoch": state.best_epoch},
            "config": config_yaml, "data": job.data.meta()}


def restore(job: Job, ckpt: dict, state: TrainState) -> Meter:
    job.base_model.load_state_dict(ckpt["model"])
    job.tricks.load_state_dict(ckpt["tricks"])  # first: a trick may have swapped the optimizer or schedule
    job.optimizer.load_state_dict(ckpt["optimizer"])
    job.schedule.load_state_dict(ckpt["schedule"])
    job.precision.load_state_dict(ckpt["precision"])
    for k, v in ckpt["state"].items():
        setattr(state, k, v)
    checkpoint.set_rng_state(ckpt["rng"])
    return Meter(job.device, ckpt["meter"] if state.batch else None)


def write_metrics(history: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)


def write_json(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def find_resume(cfg: DictConfig, run_dir: Path, key: str, out: Reporter) -> Path | None:
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        found = rundir.find_resumable(cfg.out_dir, key, exclude=run_dir)
        if found is None:
            out.info(f"resume=auto: no unfinished run with this config under {cfg.out_dir}/; starting a new run")
            return None
    path = checkpoint.resolve(found if cfg.resume == "auto" else cfg.resume)
    rundir.claim(path.parent.parent, run_dir)  # one process at a time continues a run
    return path


def train(cfg: DictConfig, run_dir: Path, choices: dict[str, str], out: Reporter) -> float:
    """Train the configured job in run_dir and return the best value of cfg.optimized_metric.
    mode=final: train on train+val without validation, then score the test split once (final.py)."""
    t_start, timings = time.time(), Timings()
    world = distributed.current()
    final = cfg.mode == "final"
    device = pick_device(distributed.pick_device(str(cfg.device), world))
    key = config_key(cfg)
    # rank 0 alone looks (its resume.json marks the old run taken; the others must not race it)
    resume_path = distributed.on_main(lambda: find_resume(cfg, run_dir, key, out), world)
    ckpt = checkpoint.load(resume_path) if resume_path else None  # fail on a bad file before any work
    if ckpt and ckpt["config"] and config_key(OmegaConf.create(ckpt["config"])) != key:
        raise DlrunError(f"resume: {resume_path} was trained with a different config; "
                         "resume with the same overrides (see its .hydra/overrides.yaml)")
    loggers = build_loggers(cfg.get("logger"), out.warn)  # a missing package stops here, before any work
    loggers = loggers if world.main else None  # rank 0 alone writes
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
    ckdir = run_dir / "checkpoints"
    if world.main:
        ckdir.mkdir(parents=True, exist_ok=True)
        (ckdir / "config_key.txt").write_text(key)
        rundir.claim(run_dir, run_dir)  # a resume=auto in another terminal must not continue this run meanwhile
    state, meter, sample = TrainState(), Meter(device), None
    painter = Painter(out.warn)
    if ckpt:
        meter = restore(job, ckpt, state)
        if not world.main:  # the saved partial-epoch sums are all ranks' together: counted once, on rank 0
            meter = Meter(device)
        else:
            write_json({"resumed_from": str(resume_path.parent.parent.resolve()), "epoch": state.epoch,
                        "batch": state.batch}, run_dir / "resume.json")
            carry_over(resume_path, ckdir, state.history, run_dir)
        out.info(f"resumed from {resume_path} at epoch {state.epoch + 1}, batch {state.batch}")
    else:
        if world.main:
            sample = first_batch(job)
            if cfg.plots == "all":
                painter.submit("samples", plots.samples, *sample, job.data.class_names, job.data.modality,
                               run_dir / "samples.png")
        job.tricks.before_fit(run_dir)
    n_params = sum(p.numel() for p in job.base_model.parameters())
    n_train = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
    trainable = f", {n_train:,} trainable" if n_train != n_params else ""
    out.info(f"dlrun: {job.data.name} {job.data.sizes()} -> {type(job.base_model).__name__} ({n_params:,} params{trainable}) "
             f"on {device}, {job.precision.name}; run folder {run_dir}")
    placement = job.data.extra.get("placement") or {}
    if device.type == "cuda" or placement.get("on_device") is False:
        out.info(f"data: {'on the device' if placement.get('on_device') else 'host -> device per batch'}"
                 f" ({placement.get('why')})")
    saver = checkpoint.Checkpointer(ckdir, float(cfg.checkpoint_interval)) if world.main else checkpoint.Discard()
    if loggers:
        loggers.start(run_dir, OmegaConf.to_container(cfg, resolve=True), job.data, sample, state.history,
                      resume_path.parent.parent.resolve() if resume_path else None)
    # out-of-memory recovery in one process (several would have to agree on it: not yet)
    oom = OOMGuard(device, out.warn) if not world.active else None
    timings.add("build", time.perf_counter() - timings.start)
    t_loop = time.perf_counter()

    def close(status: str, extra: dict | None = None) -> float:
        """One way out for completed, interrupted, diverged and crashed runs: checkpoints on disk,
        then (rank 0) the pictures, analysis and summary.json."""
        timings.add("epochs", time.perf_counter() - t_loop - saver.seconds)  # the loop, less its checkpoint writes
        saver.flush()
        if world.main and state.history and not (ckdir / "last.pt").exists():  # resumed with nothing left to train
            saver.save_now(payload(job, state, meter, OmegaConf.to_yaml(cfg, resolve=True)))
        timings.add("checkpoints", saver.seconds)
        if not world.main:
            return float(state.best) if state.best is not None else float("nan")
        return finish(cfg, job, state, run_dir, t_start, status, resume_path, n_params, out, loggers,
                      extra={**(extra or {}), **run_extras(world, device, state, oom, job)},
                      timings=timings, painter=painter)

    # ranks agree on a stop every step on a CPU (cheap), every log_every steps on a GPU (a sync)
    with StopSignal(world, device, 1 if device.type == "cpu" else int(cfg.log_every)) as stop:
        try:
            run_epochs(cfg, job, state, meter, stop, saver, run_dir, out, loggers, oom, painter=painter)
        except Interrupted as e:
            saver.flush()  # an interrupt between epochs: the finished epoch's state is still pending
            out.info(f"{e}: checkpoint saved at epoch {state.epoch + 1}, batch {state.batch} -> "
                     f"{ckdir / 'last.pt'}; continue with `dlrun <same overrides> resume=auto`")
            close("interrupted")
            raise
        except NonFiniteLoss as e:  # stop at the first NaN/Inf, name where it came from, keep the good checkpoint
            saver.flush()
            close("diverged", {"nonfinite": diverged(job, state, e, ckdir, out)})
            raise TrainingDiverged(f"training stopped: non-finite loss at epoch {state.epoch + 1}, step {e.step}; "
                                   f"details in {run_dir / 'summary.json'}") from None
        except Exception:  # keep the last finished epoch on disk, record the failure, show the error
            close("failed")
            raise
    paused = state.epoch < int(cfg.epochs)  # stop_after: last.pt holds the state to continue from
    if not paused:
        job.tricks.on_train_end()
    return close("paused" if paused else "completed")


def carry_over(resume_path: Path, ckdir: Path, history: list[dict], run_dir: Path) -> None:
    """A resumed run's folder holds the whole run from its first moment: the epochs before the
    interruption in metrics.csv, and best.pt when the best epoch came before it (the resumed part
    may never beat it)."""
    if history:
        write_metrics(history, run_dir / "metrics.csv")
    old_best = resume_path.parent / "best.pt"
    if old_best.is_file() and not (ckdir / "best.pt").exists():
        checkpoint.link(old_best, ckdir / "best.pt")


def run_extras(world: distributed.World, device: torch.device, state: TrainState, oom: OOMGuard | None,
               job: Job | None = None) -> dict:
    """summary.json entries besides the metrics: `batch_size`, `data_placement`; and those only some
    runs have: `distributed`, `oom`."""
    extra = {"batch_size": batch_size_report(job), "data_placement": job.data.extra.get("placement")} if job else {}
    if world.active:
        extra["distributed"] = distributed_report(world, device, state)
    if oom is not None and oom.report():
        extra["oom"] = oom.report()
    if job is not None and job.watch is not None:
        extra["watch"] = job.watch.report()
    return extra


def batch_size_report(job: Job) -> dict:
    """summary.json's `batch_size`: the global batch, and the search when it was automatic."""
    auto = job.data.extra.get("batch_size_auto")
    return {"value": job.data.batch_size, "auto": auto is not None, **({"trials": auto["trials"]} if auto else {})}


def distributed_report(world: distributed.World, device: torch.device, state: TrainState) -> dict:
    """summary.json's record of a data-parallel run: the world, and how many samples the ranks
    together saw in the last epoch (each sample once: the split sizes)."""
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    return {"world_size": world.size, "backend": backend, "device": str(device), "samples_per_epoch": state.seen}


def first_batch(job: Job, limit: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The first training batch as the network receives it (the whole batch, not one rank's slice),
    on the CPU, for samples.png and the loggers."""
    with torch.random.fork_rng(devices=[]):  # the picture must not shift the training RNG stream
        batches = job.train.inner if isinstance(job.train, distributed.ShardedBatches) else job.train
        _, (x, y) = next(batches.iterate(0))
        if job.full_model is not None:  # the net trains on cached activations: show its inputs
            x, y = job.data.train.x[:limit], job.data.train.y[:limit]
    return x[:limit].detach().float().cpu().clone(), y[:limit].detach().cpu().clone()


def run_epochs(cfg: DictConfig, job: Job, state: TrainState, meter: Meter, stop: StopSignal,
               saver: checkpoint.Checkpointer, run_dir: Path, out: Reporter, loggers: Loggers | None = None,
               oom: OOMGuard | None = None, config_yaml: str | None = None, painter: Painter | None = None) -> None:
    """Train until cfg.epochs. `config_yaml` (the resolved config every checkpoint carries) is made
    here unless the caller has it: a caller that trains one epoch per call passes it once.
    `painter`: with plots=all, curves.png is redrawn in the background after every epoch."""
    metric, lower = cfg.optimized_metric, minimize(cfg.optimized_metric)
    progress = Throughput(int(cfg.log_every), out.step, lambda: max(g["lr"] for g in job.optimizer.param_groups))
    config_yaml = config_yaml or OmegaConf.to_yaml(cfg, resolve=True)  # once: the same in every checkpoint
    world = distributed.current()
    ddp = distributed.DataParallel(job.device) if world.active else None
    val = distributed.ShardedBatches(job.val, world) if world.active else None
    any_rank = (lambda flag: distributed.any_rank(flag, job.device)) if world.active else None
    # stop_after: pause after that many epochs (the schedule still spans cfg.epochs); resume continues
    until = min(int(cfg.epochs), int(cfg.get("stop_after") or cfg.epochs))
    while state.epoch < until:
        t0 = time.perf_counter()
        job.tricks.on_epoch_start(state.epoch)
        forward = ddp(job.model) if ddp else None  # after on_epoch_start: it may unfreeze layers
        with out.epoch(state.epoch, int(cfg.epochs), len(job.train), state.batch):
            done = train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision,
                               job.tricks, state, meter, stop, progress,
                               nan_every=1 if job.device.type == "cpu" else int(cfg.log_every),
                               forward=forward, any_rank=any_rank, oom=oom, watch=job.watch)
        if not done:
            saver.save_now(payload(job, state, meter.reduced(), config_yaml))  # all ranks' partial sums
            raise Interrupted(stop.signum)
        if world.active:
            distributed.sync_buffers(job.model)  # BatchNorm statistics: rank 0's, as saved
        train_meter = meter.reduced()
        state.seen = {"train": train_meter.n}
        held_out = {} if job.data.val_in_train else validate_split(job, "val", val, state.seen)  # final: none
        row = {"epoch": state.epoch + 1, **train_meter.result("train"), **held_out,
               "lr": max(g["lr"] for g in job.optimizer.param_groups), **job.tricks.on_epoch_end(state.epoch),
               "time": time.perf_counter() - t0}
        state.history.append(row)
        # mode=final selects nothing: every epoch replaces best.pt, the last weights are the model
        improved = (job.data.val_in_train or state.best is None
                    or (row[metric] < state.best if lower else row[metric] > state.best))
        if improved:
            state.best, state.best_epoch = row.get(metric), row["epoch"]
        state.epoch, state.batch, meter = state.epoch + 1, 0, Meter(job.device)
        saver.epoch_end(payload(job, state, meter, config_yaml), improved)
        if world.main:
            write_metrics(state.history, run_dir / "metrics.csv")
            if painter is not None and cfg.plots == "all":
                painter.submit("curves", plots.curves, list(state.history), run_dir / "curves.png")
        if loggers:
            loggers.log_epoch(row, row["epoch"], job.base_model)
        out.epoch_end(row, int(cfg.epochs), improved)
        if stop():
            raise Interrupted(stop.signum)


def validate_split(job: Job, split: str, shard: distributed.ShardedBatches | None = None,
                   counts: dict | None = None) -> dict[str, float]:
    """Metrics with the tricks' predictions (TTA, averaged weights, ensembles); when a trick changes
    predictions, the plain model's too, as `<split>/plain_loss` and `<split>/plain_acc`.
    shard: this rank's part of the split in a data-parallel run (metrics summed over ranks)."""
    batches = shard if shard is not None else (job.val if split == "val" else job.test)
    reduce = shard is not None
    res = evaluate(job.model, batches, job.loss_fn, job.precision, split, job.tricks.predict, reduce, counts)
    if job.tricks.changes_predictions:
        plain = evaluate(job.model, batches, job.loss_fn, job.precision, split, reduce=reduce)
        res |= {f"{split}/plain_{k.split('/')[1]}": v for k, v in plain.items()}
    return res


def diverged(job: Job, state: TrainState, e: NonFiniteLoss, ckdir: Path, out: Reporter) -> dict:
    """Replay the batch whose loss went NaN/Inf (weights of the step before) and name its origin."""
    from dlrunner.doctor.nan import locate

    x, y = e.batch
    rep = locate(job.model, x, y, job.loss_fn, job.precision.autocast)
    lr = max(g["lr"] for g in job.optimizer.param_groups)
    out.warn(f"loss is {e.loss} at epoch {state.epoch + 1}, step {e.step} (lr {lr:.2e}); replaying that batch:")
    for line in rep.lines():
        out.info(f"  {line}")
    kept = ckdir / "last.pt"
    out.info(f"  the last good checkpoint is kept: {kept if kept.exists() else 'none yet (no epoch finished)'}")
    return {"epoch": state.epoch + 1, "step": e.step, "loss": e.loss, "lr": lr, **rep.to_dict()}


def finish(cfg: DictConfig, job: Job, state: TrainState, run_dir: Path, t_start: float, status: str,
           resumed_from: Path | None, n_params: int, out: Reporter, loggers: Loggers | None = None,
           extra: dict | None = None, timings: Timings | None = None, painter: Painter | None = None) -> float:
    """Pictures, optional test evaluation, error analysis, summary.json (the last write: a folder with
    one is complete), the final table; returns the optimized metric. Pictures are drawn by `painter`
    in the background while the rest goes on (now, without one)."""
    timings = timings or Timings()
    t_finish = time.perf_counter()
    plot = cfg.get("plots", "all")
    draw = (lambda key, fn, *args: None) if plot == "none" else \
        (painter.submit if painter is not None else (lambda key, fn, *args: fn(*args)))
    if state.history:
        draw("curves", plots.curves, list(state.history), run_dir / "curves.png")
    if plot != "none" and not (run_dir / "samples.png").exists():  # plots=end, or a resumed run
        draw("samples", plots.samples, *first_batch(job), job.data.class_names, job.data.modality,
             run_dir / "samples.png")
    t_analysis = time.perf_counter()
    best_row = next((r for r in state.history if r["epoch"] == state.best_epoch), {})
    final = dict(state.history[-1]) if state.history else {}
    held_out = job.data.val_in_train  # mode=final
    if held_out:  # the one look at the test split, with the final weights
        from dlrunner.modes import final as final_mode
        tested, errors = final_mode.score_test(job, run_dir, out.warn) if status == "completed" else ({}, {})
        final, best_row = {**final, **tested}, {**best_row, **tested}
        extra = {**final_mode.record(cfg, job, tested), **(extra or {})}  # value: the test metric
        verdict = final_verdict(final)
    else:
        if status == "completed" and cfg.eval_test and (run_dir / "checkpoints" / "best.pt").exists():
            best = checkpoint.load(run_dir / "checkpoints" / "best.pt")
            job.base_model.load_state_dict(best["model"])
            job.tricks.load_state_dict(best["tricks"])  # e.g. averaged weights or snapshots of that epoch
            best_row = {**best_row, **validate_split(job, "test")}
        # confusion matrix, per-class scores, top losses on val (the weights the job holds now)
        errors = analysis.after_training(job, run_dir, out.warn, draw=draw) if status == "completed" else {}
        verdict = fit_verdict(state.history)
    timings.add("analysis", time.perf_counter() - t_analysis)
    if painter is not None:
        painter.wait()  # every picture is on disk before summary.json says the run is complete
        timings.add("plots", painter.seconds)
    provenance = {"command": rundir.command_line(), "git_sha": rundir.git_sha(), "versions": rundir.versions()}
    timings.add("finish", time.perf_counter() - t_finish - timings.parts["analysis"])
    summary = {"status": status, "mode": str(cfg.mode), "fit": verdict, "optimized_metric": cfg.optimized_metric,
               "value": state.best, "best_epoch": state.best_epoch, "epochs_run": len(state.history), "final": final,
               "best": best_row,
               "run_dir": str(run_dir), "data": {"name": job.data.name, **job.data.sizes(),
                                                 "classes": job.data.class_names, "in_shape": job.data.in_shape},
               "model": {"class": type(job.base_model).__name__, "params": n_params},
               "device": str(job.device), "precision": job.precision.name, "threads": torch.get_num_threads(), "wall_time": time.time() - t_start,
               "resumed_from": str(resumed_from) if resumed_from else None, **provenance, "seed": int(cfg.seed),
               "tricks": job.tricks.report(), **errors, **(extra or {}),
               "timings": timings.report(background=("plots",))}
    write_json(summary, run_dir / "summary.json")
    if loggers:
        loggers.finish(summary)  # after summary.json and curves.png exist: MLflow keeps them as artifacts
    if status == "completed":
        if "per_class" in errors:
            out.per_class(errors["per_class"], errors["confusion"]["split"])
        out.final(summary)
        if held_out:
            out.info(final_mode.statement(summary))
    value = summary["value"]
    return float(value) if value is not None else float("nan")


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path, choices: dict[str, str], out: Reporter) -> float:
    """mode=eval: rebuild the checkpoint's own job (same data pipeline) and evaluate one split."""
    ckpt = checkpoint.load(cfg.ckpt)
    saved = OmegaConf.create(ckpt["config"])
    saved.device = cfg.device
    job = build_job(saved, pick_device(str(cfg.device)), out.warn, choices={})
    job.base_model.load_state_dict(ckpt["model"])
    job.tricks.load_state_dict(ckpt["tricks"])
    split = job.val if cfg.split == "val" else job.test
    res = validate_split(job, cfg.split)
    res_all = {"checkpoint": str(checkpoint.resolve(cfg.ckpt)), "split": cfg.split, "samples": split.num_samples, **res}
    write_json(res_all, run_dir / "eval.json")
    for k, v in res.items():
        out.info(f"{k} {v:.4f}")
    out.info(f"{cfg.split}: {split.num_samples} samples from {res_all['checkpoint']}")
    return res[f"{cfg.split}/acc"]


def find_lr(cfg: DictConfig, run_dir: Path, choices: dict[str, str], out: Reporter) -> float:
    """mode=lr_find: the LR range test alone; prints the suggestion, writes lr_finder.png."""
    from dlrunner.tricks.lr_finder import lr_find

    job = build_job(cfg, pick_device(str(cfg.device)), out.warn, choices)
    node = cfg.trick.get("lr_finder")
    opts = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    opts.pop("_target_", None)
    rule = opts.pop("rule", "valley")
    value = lr_find(job, run_dir, rule=rule, **opts)
    write_json({"suggestion": value, "rule": rule, **opts}, run_dir / "lr_find.json")
    out.info(f"suggested lr {value:.2e} ({rule}); plot: {run_dir / 'lr_finder.png'}")
    out.info(f"use it: dlrun <same overrides> optim.lr={value:.2e}  (or trick=lr_finder to do this before training)")
    return value
