"""The end of a mode=train/final run, whatever ended it: the pictures, the test score (eval_test,
or mode=final's one look), the error analysis, summary.json (written last: a folder with one is
complete) and the final table; and what summary.json records besides the metrics."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from dlrunner.engine.job import Job
from dlrunner.engine import checkpoint, distributed
from dlrunner.engine.evaluate import score_split
from dlrunner.engine.loop import TrainState, lr_of
from dlrunner.engine.oom import OOMGuard
from dlrunner.engine.step import NonFiniteLoss
from dlrunner.reporting import analysis, plots, rundir
from dlrunner.reporting.console import Reporter
from dlrunner.reporting.files import write_json
from dlrunner.reporting.loggers import Loggers
from dlrunner.reporting.painter import Painter
from dlrunner.reporting.timing import Timings
from dlrunner.reporting.verdict import final_verdict, fit_verdict


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
    final, best_row, errors, extra, verdict = scores(cfg, job, state, run_dir, status, out, draw, extra)
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
        if job.data.val_in_train:  # mode=final
            from dlrunner.modes.final import statement

            out.info(statement(summary))
    value = summary["value"]
    return float(value) if value is not None else float("nan")


def scores(cfg: DictConfig, job: Job, state: TrainState, run_dir: Path, status: str, out: Reporter, draw,
           extra: dict | None) -> tuple[dict, dict, dict, dict | None, dict]:
    """(final row, best row, error analysis, summary extras, fit verdict). mode=final looks at the
    test split once, with the final weights; a run with eval_test scores best.pt on it."""
    best_row = next((r for r in state.history if r["epoch"] == state.best_epoch), {})
    final = dict(state.history[-1]) if state.history else {}
    if job.data.val_in_train:  # mode=final
        from dlrunner.modes import final as final_mode

        tested, errors = final_mode.score_test(job, run_dir, out.warn) if status == "completed" else ({}, {})
        final, best_row = {**final, **tested}, {**best_row, **tested}
        extra = {**final_mode.record(cfg, job, tested), **(extra or {})}  # value: the test metric
        return final, best_row, errors, extra, final_verdict(final)
    if status == "completed" and cfg.eval_test and (run_dir / "checkpoints" / "best.pt").exists():
        best = checkpoint.load(run_dir / "checkpoints" / "best.pt")
        job.base_model.load_state_dict(best["model"])
        job.tricks.load_state_dict(best["tricks"])  # e.g. averaged weights or snapshots of that epoch
        best_row = {**best_row, **score_split(job, "test")}
    # confusion matrix, per-class scores, top losses on val (the weights the job holds now)
    errors = analysis.after_training(job, run_dir, out.warn, draw=draw) if status == "completed" else {}
    return final, best_row, errors, extra, fit_verdict(state.history)


def diverged(job: Job, state: TrainState, e: NonFiniteLoss, ckdir: Path, out: Reporter) -> dict:
    """Replay the batch whose loss went NaN/Inf (weights of the step before) and name its origin."""
    from dlrunner.doctor.nan import locate

    x, y = e.batch
    rep = locate(job.model, x, y, job.loss_fn, job.precision.autocast)
    lr = lr_of(job.optimizer)
    out.warn(f"loss is {e.loss} at epoch {state.epoch + 1}, step {e.step} (lr {lr:.2e}); replaying that batch:")
    for line in rep.lines():
        out.info(f"  {line}")
    kept = ckdir / "last.pt"
    out.info(f"  the last good checkpoint is kept: {kept if kept.exists() else 'none yet (no epoch finished)'}")
    return {"epoch": state.epoch + 1, "step": e.step, "loss": e.loss, "lr": lr, **rep.to_dict()}


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
