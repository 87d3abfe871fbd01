"""`make bench`: the numbers in the README, measured here. Results go to bench/results/*.json.

1. quality: `dlrun` (digits + lenet, defaults) wall time including start-up, and best val acc;
   `dlrun data=mnist1d model=conv1d` test accuracy.
2. overhead: time per epoch of dlrun's loop (train + val + checkpoint + metrics.csv) against a
   minimal hand-written loop (train + val), same model, data, batch size and seed, run
   alternately in one process; the ratio of medians.
3. determinism: two runs with the same seed give identical metrics.
4. doctor: `dlrun mode=doctor` on every model rung with its bundled data: wall time incl. start-up,
   verdict counts, and the seconds of each check.
5. lightning: the same job under PyTorch Lightning (bench/lightning_job.py, the `bench` extra): time per
   epoch, whole runs alternated in rounds; the ratio dlrun / Lightning of medians, and final val accs.
6. tta: time to a target val accuracy on the bundled data sets, dlrun's defaults and lr_finder + onecycle.
7. scaling: time per epoch as data.fraction, model.width and data.batch_size double.
8. gpu: images/s and model FLOP utilization of resnet18 in bf16 + channels_last (+ compile) at batch
   256-1024, data on the device vs through a DataLoader (CUDA only; `skipped` otherwise).
9. startup: what a run costs besides its epochs (bench/startup.py): `dlrun debug=smoke` against the same
   job by hand, the fixed cost per job of a multirun, `dlrun --help`, `dlrun mode=doctor`.
10. presets: every recipe in conf/experiment/ as its header runs it (bench/presets.py); the figures
   its header quotes.
11. watch: time per epoch with the watchdog on against off, same job, alternated (bench/watch.py).
12. search (bench/search.py): the importance sweep against quasi-random search and Optuna's TPE, same
   space, budget, job and launcher; each pick scored on the test split with 3 fresh seeds (an hour or
   more on 2 CPU cores: `--only search`, `--search digits_lenet` for one job).
Results go to bench/results/cpu-*.json, or gpu-*.json where CUDA is present.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# the sections, one file each (this checkout's dlrunner and bench/ come first on the path above)
from common import compose_cfg, machine  # noqa: E402, F401 - compose_cfg: the watch bench's, tests use it from here
from doctor_runs import doctor  # noqa: E402
from gpu_speed import gpu  # noqa: E402
from lightning_cmp import lightning  # noqa: E402
from overhead import overhead, same_weights  # noqa: E402, F401 - same_weights: tests call it from here
from quality import determinism, quality  # noqa: E402
from scaling import scaling  # noqa: E402
from time_to_acc import tta  # noqa: E402
from trick_gains import precompute, tricks  # noqa: E402


def sections(tmp: Path, args: argparse.Namespace) -> dict:
    """name -> the section's measurement (called only when selected), in the order they run."""
    mnist1d = ["data=mnist1d", "model=conv1d", f"data.root={tmp / 'data'}"]

    def overheads() -> dict:
        res = {"digits_lenet": overhead(tmp, [], args.rounds), "mnist1d_conv1d": overhead(tmp, mnist1d, args.rounds)}
        if torch.cuda.is_available():  # the CUDA bar: resnet on CIFAR-shaped data (bench/synthetic.py)
            res["cifar_resnet_cuda"] = overhead(
                tmp, ["model=resnet", "data._target_=synthetic.cifar_like", "+data.n=20000", "data.batch_size=256",
                      "data.val_fraction=0.1", "data.test_fraction=0.1"], args.rounds, device="cuda")
        return res

    def watch_cost() -> dict:  # the watchdog's cost against the same epochs without it
        import watch as watch_bench

        return {name: watch_bench.cost(tmp, o, args.rounds, compose_cfg)
                for name, o in {"digits_lenet": [], "mnist1d_conv1d": mnist1d}.items()}

    def startup_cost() -> dict:
        from startup import startup

        return startup(tmp)

    def preset_runs() -> dict:
        from presets import presets

        return presets(tmp, args.presets)

    def search_runs() -> dict:
        from search import search  # bench/search.py

        return search(tmp, args.search, args.methods, args.sweep_seeds)
    return {"quality": lambda: quality(tmp), "overhead": overheads, "precompute": lambda: precompute(tmp),
            "tricks": lambda: tricks(tmp, args.tricks), "determinism": lambda: determinism(tmp),
            "doctor": lambda: doctor(tmp), "lightning": lambda: lightning(tmp), "tta": lambda: tta(tmp, args.seeds),
            "scaling": lambda: scaling(tmp), "gpu": lambda: gpu(tmp), "startup": startup_cost,
            "presets": preset_runs, "watch": watch_cost, "search": search_runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tricks", nargs="*", default=None, help="with --only tricks: just these")
    ap.add_argument("--rounds", type=int, default=10, help="alternating epochs per overhead measurement")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per time-to-accuracy row")
    ap.add_argument("--only", choices=list(sections(Path("."), argparse.Namespace())), default=None)
    ap.add_argument("--presets", nargs="*", default=None, help="with --only presets: just these")
    ap.add_argument("--search", nargs="*", default=None, help="with --only search: just these jobs (bench/search.py JOBS)")
    ap.add_argument("--methods", nargs="*", default=None, help="with --only search: just these sweep.method values")
    ap.add_argument("--sweep-seeds", type=int, nargs="*", default=None,
                    help="with --only search: each method once per sweep.sobol_seed (default: 0 only)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON")
    args = ap.parse_args()
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for name, section in sections(tmp, args).items():
            if args.only in (None, name):
                res[name] = section()
    suffix = args.only or "all"
    if args.tricks:
        suffix += "-" + "-".join(args.tricks)
    if args.presets:  # a subset: cpu-presets.json keeps every preset's figures
        suffix += "-" + "-".join(args.presets)
    if args.search:
        suffix += "-" + "-".join(args.search + (args.methods or []))
    if args.sweep_seeds and args.sweep_seeds != [0]:
        suffix += "-seeds" + "-".join(map(str, args.sweep_seeds))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{'gpu' if torch.cuda.is_available() else 'cpu'}-{suffix}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
