"""`make bench` lightning: the same job under PyTorch Lightning (bench/lightning_job.py)."""
from __future__ import annotations

from pathlib import Path

from common import compose_cfg, mnist1d_root, train_here
from measure import median, steady


LIGHTNING_JOBS = {"digits_lenet": [], "mnist1d_conv1d": ["data=mnist1d", "model=conv1d"]}


def lightning(tmp: Path, rounds: int = 4, epochs: int = 6) -> dict:
    """dlrun against Lightning on the same job (bench/lightning_job.py): whole runs of `epochs` epochs,
    the four contenders' order rotating each round; the epoch times after each run's first, pooled."""
    try:
        import lightning_job
    except ImportError:
        return {"skipped": 'pip install -e ".[bench]"'}
    import lightning as L

    from dlrunner.build import build_job, pick_device

    def with_lightning(overrides: list[str], loader: str):
        def run(d: Path) -> tuple[list[float], float]:
            job = build_job(compose_cfg(overrides), pick_device("auto"), print)
            return lightning_job.fit(job, epochs, d, loader)
        return run

    def with_dlrun(overrides: list[str]):
        def run(d: Path) -> tuple[list[float], float]:
            starts, s = train_here(d, overrides)
            return starts, s["final"]["val/acc"]
        return run

    out = {"lightning_version": L.__version__}
    for name, args in LIGHTNING_JOBS.items():
        overrides = [*args, f"epochs={epochs}", *([mnist1d_root(tmp)] if "data=mnist1d" in args else [])]
        contenders = {"dlrun": with_dlrun(overrides),
                      "dlrun_ckpt_every_epoch": with_dlrun([*overrides, "checkpoint_interval=0"]),
                      "lightning": with_lightning(overrides, "dataloader"),
                      "lightning_dlrun_batches": with_lightning(overrides, "dlrun")}
        times, acc = {k: [] for k in contenders}, {}
        for r in range(rounds):
            names = list(contenders)
            for k in names[r % len(names):] + names[:r % len(names)]:
                starts, acc[k] = contenders[k](tmp / f"lightning-{name}-{k}-{r}")
                times[k] += steady(starts)
        med = {k: median(v) for k, v in times.items()}
        res = {"overrides": overrides, "epochs": epochs, "rounds": rounds,
               **{f"{k}_s_per_epoch": round(v, 4) for k, v in med.items()},
               **{f"{k}_val_acc": v for k, v in acc.items()},
               "ratio": round(med["dlrun"] / med["lightning"], 3),
               "ratio_of_fastest": round(min(times["dlrun"]) / min(times["lightning"]), 3),
               "ratio_dlrun_batches": round(med["dlrun"] / med["lightning_dlrun_batches"], 3),
               "ratio_ckpt_every_epoch": round(med["dlrun_ckpt_every_epoch"] / med["lightning"], 3)}
        out[name] = res
        print("lightning", name, res, flush=True)
    return out
