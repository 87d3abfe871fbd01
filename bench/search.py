"""`make bench ARGS="--only search"`: the importance sweep against what a user would run instead,
quasi-random search over every key at once (the Tuning Playbook's exploration, scrambled Sobol) and
Optuna's TPE over every key (8 random start-up points, then TPE asked two at a time), both with
whole runs (`sweep.halving=1`); the importance sweep as configured (successive halving included). All three go
through the same sweeper (`sweep.method=importance|random|tpe`), so they share the space
(conf/sweep/importance.yaml), the budget (trials), the job, the launcher (joblib, 2 trials at a
time, 1 CPU thread each) and the pick rule: the 2 best points re-run with seed 1 on another validation split, the best 2-seed
val mean wins. Each pick, and the job without search, is then trained with 3 fresh seeds (2, 3, 4)
and scored on the test split (`eval_test=true`: best.pt, chosen on val, evaluated once on test).
`python bench/search.py --table` prints the README table from bench/results/cpu-search.json;
`python bench/search.py --bar [OVERRIDE...]` runs the 30-minute MNIST-1D sweep and scores its pick."""
from __future__ import annotations

import csv
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBS = {  # name: the job's overrides (what every trial and every test run shares)
    "mnist1d_conv1d": ["data=mnist1d", "model=conv1d", "epochs=10"],
    # the default job (digits, lenet) at 10 epochs, half the 1,797 images held out for test: the
    # default 15% (270 images) cannot tell picks apart (one image is 0.4 points); 30% of the rest for
    # validation (269 images): the default 15% (135, one image 0.7 points) makes a pick a matter of seeds
    "digits_lenet": ["epochs=10", "data.test_fraction=0.5", "data.val_fraction=0.3"],
}
METHODS = ["importance", "random", "tpe"]
TEST_SEEDS = [2, 3, 4]
_runs = itertools.count()  # run folders of the scoring runs


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def sweep(tmp: Path, job: list[str], method: str, budget: int, jobs: int, extra: list[str] = ()) -> dict:
    """One sweep through the joblib launcher; its pick, trials and wall time."""
    out = tmp / "-".join(["sweep", method, *(e.replace("=", "").replace("/", "_") for e in extra)])  # its own folder: not a resumed one
    if method != "importance":  # the plain searches a user would run: whole runs only
        extra = ["sweep.halving=1", *extra]
    args = [sys.executable, "-m", "dlrunner", "-m", "sweep=importance", f"sweep.method={method}",
            f"sweep.budget={budget}", f"sweep.batch={jobs}", "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir={out}", *job, *extra]
    t0 = time.time()
    res = subprocess.run(args, cwd=tmp, env=_env(), capture_output=True, text=True)
    wall = time.time() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{method} sweep failed: {res.stderr[-2000:]}")
    return summarize(out, wall)


def summarize(out: Path, wall: float) -> dict:
    """A finished sweep folder's pick, trials and wall time."""
    imp = json.loads((out / "importance.json").read_text())
    with (out / "trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    best = imp["best"]
    return {"wall_s": round(wall, 1), "trials": len(trials), "failed": imp["failed"],
            "configurations": len({t["overrides"] for t in trials}),
            "trial_time_s": round(sum(float(t["time"] or 0) for t in trials), 1),  # the runs' own walls, summed
            "pick": best["values"], "pick_val_2seed": best["metric"], "pick_seeds": best["seeds"],
            "ranked_by": imp.get("optimized_metric"),  # the metric of pick_val_2seed (sweep.rank_by)
            "measured_importance": imp.get("measured"),
            # every trial as trials.csv has it (run folders are local paths: dropped), with val/acc and
            # val/loss at its best epoch (what another ranking rule would have seen)
            "trial_rows": [{**{k: v for k, v in t.items() if k != "run_dir"}, **_best_row(t.get("run_dir"))}
                           for t in trials]}


def _best_row(run_dir: str | None) -> dict:
    """A trial's val/acc and val/loss at its best epoch, from its summary.json ({} without one)."""
    try:
        best = json.loads((Path(run_dir) / "summary.json").read_text())["best"]
        return {k: best[k] for k in ("epoch", "val/acc", "val/loss") if k in best}
    except (TypeError, OSError, ValueError, KeyError):
        return {}


def score(tmp: Path, job: list[str], values: dict[str, str], seeds: list[int], jobs: int, final: bool = False) -> dict:
    """The configuration trained once per seed (`jobs` at a time, 1 thread each); val and test acc.
    `final`: `mode=final` instead, the last step after a sweep (trained on train+val, no epoch picked,
    the test split scored once): its test acc."""
    procs, out = [], {}
    for s in seeds:
        run = tmp / "score" / f"{next(_runs)}-seed{s}"
        args = [sys.executable, "-m", "dlrunner", *job, *[f"{k}={v}" for k, v in sorted(values.items())],
                f"seed={s}", "mode=final" if final else "eval_test=true", f"hydra.run.dir={run}"]
        procs.append((s, run, subprocess.Popen(args, cwd=tmp, env=_env(), stdout=subprocess.DEVNULL,
                                               stderr=subprocess.PIPE, text=True)))
        while sum(p.poll() is None for _, _, p in procs) >= jobs:
            time.sleep(0.5)
    for s, run, p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"scoring seed {s} failed: {err[-2000:]}")
        summary = json.loads((run / "summary.json").read_text())
        out[s] = ({"test": summary["retrain"]["test"]["test/acc"]} if final else
                  {"val": summary["value"], "test": summary["best"]["test/acc"]})
    return out


def compare(tmp: Path, name: str, budget: int = 24, jobs: int = 2, methods: list[str] | None = None,
            sweep_seeds: list[int] | None = None) -> dict:
    """`sweep_seeds`: each method once per `sweep.sobol_seed` (its Sobol points and TPE sampler; 0: as
    shipped); a sweep with another seed is keyed `METHOD sweep.sobol_seed=S`."""
    job = JOBS[name]
    res = {"job": job, "budget": budget, "parallel": jobs, "test_seeds": TEST_SEEDS}
    if 0 in (sweep_seeds or [0]):  # the job as given (a run of other sweep seeds only leaves it out)
        base = score(tmp, job, {}, [0, 1, *TEST_SEEDS], jobs)
        res["default"] = {"pick_val_2seed": (base[0]["val"] + base[1]["val"]) / 2,
                          "test": [base[s]["test"] for s in TEST_SEEDS]}
        res["default"]["test_mean"] = sum(res["default"]["test"]) / len(TEST_SEEDS)
    for method, seed in itertools.product(methods or METHODS, sweep_seeds or [0]):
        key = method if seed == 0 else f"{method} sweep.sobol_seed={seed}"
        r = sweep(tmp, job, method, budget, jobs, [f"sweep.sobol_seed={seed}"] if seed else [])
        scored = score(tmp, job, r["pick"], TEST_SEEDS, jobs)
        r["test"] = [scored[s]["test"] for s in TEST_SEEDS]
        r["test_mean"] = sum(r["test"]) / len(TEST_SEEDS)
        res[key] = r
        print(f"{name} {key}: {r['wall_s']:.0f} s, pick val {r['pick_val_2seed']:.4f}, "
              f"test {r['test_mean']:.4f}\n{json.dumps(r)}", flush=True)
    return res


def search(tmp: Path, names: list[str] | None = None, methods: list[str] | None = None,
           sweep_seeds: list[int] | None = None) -> dict:
    """The comparison on every job of JOBS (or `names`), one after the other (`methods`: some only;
    `sweep_seeds`: each method once per sweep seed)."""
    return {name: compare(tmp, name, methods=methods, sweep_seeds=sweep_seeds) for name in (names or JOBS)}


def _label(key: str) -> str:
    """A row's method: `METHOD ...` as given, a variant's settings after `sweep.method=importance`."""
    return f"`sweep.method={key}`" if key.split()[0] in METHODS else f"`sweep.method=importance {key}`"


def _ranked_by(key: str, row: dict) -> str:
    """The metric a sweep ranked by: its JSON's, else (rows from before sweep.rank_by) the job's
    optimized_metric, val/acc unless the row's settings name another."""
    return row.get("ranked_by") or next((k.split("=", 1)[1] for k in key.split() if k.startswith("optimized_metric=")),
                                        "val/acc")


def _cpu(row: dict) -> str:
    """The CPU a row was measured on (`Intel Xeon`, `AMD EPYC`): wall times compare on one only."""
    return row.get("machine", "-").split(",")[0].replace("(R)", "").replace(" Processor", "")


def _measured(row: dict) -> str:
    return f"{row.get('date', '-')}, {_cpu(row)}"


def table(res: dict) -> None:
    """The README table: one row per job and method."""
    print("| job | method | ranked by | measured | sweep wall | trials (configurations) | pick (2-seed val) | pick on test, seeds "
          + "/".join(map(str, TEST_SEEDS)) + " | test mean |\n|---|---|---|---|---|---|---|---|---|")
    for name, r in res.items():
        if not isinstance(r, dict) or "default" not in r:
            continue
        d = r["default"]
        print(f"| {name} | no search (the job as given) | - | {_measured(d)} | - | - | {d['pick_val_2seed']:.3f} | "
              + " / ".join(f"{v:.3f}" for v in d["test"]) + f" | {d['test_mean']:.3f} |")
        keys = [k for k in r if isinstance(r[k], dict) and "test" in r[k] and k != "default"]
        reps = sorted((k for k in keys if k.split()[0] in METHODS), key=lambda k: (METHODS.index(k.split()[0]), k))
        for m in reps + sorted(k for k in keys if k.split()[0] not in METHODS):
            x = r[m]
            label = _label(m)
            print(f"| {name} | {label} | {_ranked_by(m, x)} | {_measured(x)} | {x['wall_s']:.0f} s | {x['trials']} ({x['configurations']}) | "
                  f"{x['pick_val_2seed']:.3f} | " + " / ".join(f"{v:.3f}" for v in x["test"])
                  + f" | {x['test_mean']:.3f} |")


def replicates(res: dict) -> None:
    """A second table: each method (or importance-sweep variant) over its sweeps with other
    `sweep.sobol_seed`s, where it was measured so."""
    rows = []
    for name, r in res.items():
        groups: dict[str, dict[int, dict]] = {}
        for k, v in r.items():
            if isinstance(v, dict) and "test" in v and k != "default":
                m = re.fullmatch(r"(.*?)(?: sweep\.sobol_seed=(\d+))?", k)
                groups.setdefault(m.group(1), {})[int(m.group(2) or 0)] = v
        order = lambda b: (b.split()[0] not in METHODS, METHODS.index(b.split()[0]) if b.split()[0] in METHODS else 0, b)  # noqa: E731
        for base in sorted(groups, key=order):
            runs = groups[base]
            if len(runs) < 2:
                continue
            x = [runs[s] for s in sorted(runs)]
            means = [v["test_mean"] for v in x]
            label = _label(base)
            rows.append(f"| {name} | {label} | {_ranked_by(base, x[0])} | {', '.join(map(str, sorted(runs)))} | "
                        f"{sum(v['wall_s'] for v in x) / len(x):.0f} s, "
                        + " + ".join(sorted({_cpu(v) for v in x})) + ", " + " + ".join(sorted({v.get("date", "-") for v in x}))
                        + " | "
                        + " / ".join(f"{v:.3f}" for v in means) + f" | {sum(means) / len(means):.4f} |")
    if rows:
        print("| job | method | ranked by | sweep.sobol_seed | sweep wall (mean), CPU, dates (wall times vary from day to day) | each sweep's pick on test (mean of seeds "
              + "/".join(map(str, TEST_SEEDS)) + ") | mean over the sweeps |\n|---|---|---|---|---|---|---|")
        print("\n".join(rows))


def measured() -> dict:
    """Every job and method measured, from bench/results/cpu-search*.json (one file per `--search JOB
    [--methods ...]` run): a file naming fewer jobs or methods (a longer name) is read later, and its
    methods replace the earlier file's. Each row carries its file's date."""
    merged: dict = {}
    for path in sorted((ROOT / "bench" / "results").glob("cpu-search*.json"), key=lambda p: (len(p.name), p.name)):
        data = json.loads(path.read_text())
        for job, r in data.get("search", {}).items():  # (cpu-search-bar*.json: the bar)
            for row in r.values():
                if isinstance(row, dict):
                    row.setdefault("date", data.get("date", "-"))
                    row.setdefault("machine", data.get("machine", "-"))
            into = merged.setdefault(job, {})
            if "default" in into and into["default"]["date"] > r.get("default", {}).get("date", ""):
                r = {k: v for k, v in r.items() if k != "default"}  # the job as given: its newest measurement
            into.update(r)
    return merged


def variant(job: str, extra: list[str], jobs: int = 2) -> None:
    """The importance sweep with other settings (`sweep.halving=1`), scored like the methods, into
    bench/results/cpu-search-JOB-variant-SETTINGS.json (the table shows it beside the methods). With
    `sweep.method=random|tpe` among the settings: that method's sweep (whole runs) with the rest."""
    import tempfile

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from common import machine  # the machine line of every result
    except ImportError:
        from run import machine

    method = next((e.split("=", 1)[1] for e in extra if e.startswith("sweep.method=")), "importance")
    extra = [e for e in extra if not e.startswith("sweep.method=")]
    with tempfile.TemporaryDirectory() as t:
        r = sweep(Path(t), JOBS[job], method, 24, jobs, extra)
        scored = score(Path(t), JOBS[job], r["pick"], TEST_SEEDS, jobs)
    r["test"] = [scored[s]["test"] for s in TEST_SEEDS]
    r["test_mean"] = sum(r["test"]) / len(TEST_SEEDS)
    key = " ".join(extra if method == "importance" else [method, *extra])  # another method's variant: `tpe SETTING...`
    extra = extra if method == "importance" else [f"sweep.method{method}", *extra]  # (the file name)
    out = ROOT / "bench" / "results" / f"cpu-search-{job}-variant-{'-'.join(e.replace('=', '').replace('/', '_') for e in extra)}.json"
    out.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "search": {job: {key: r}}},
                              indent=2))
    print(f"wrote {out}")


def bar(extra: list[str], minutes: int = 30, jobs: int = 2, name: str | None = None) -> None:
    """The 99% bar: `dlrun -m sweep=importance data=mnist1d sweep.time_budget=30m` (joblib, 2 trials at a
    time, 1 thread each; `extra`: more overrides, `epochs=40`), its pick then trained with seeds 2, 3, 4
    and scored on the test split, and retrained on train+val with the same seeds (`mode=final`, what a
    user runs after a sweep) and scored on it; into bench/results/cpu-search-bar[-NAME].json (NAME: `name`, else the
    overrides' letters), its trials.csv beside it (-trials.csv)."""
    import tempfile

    sys.path.insert(0, str(ROOT / "bench"))
    from common import machine

    job = ["data=mnist1d", *[e for e in extra if not e.lstrip("+~").startswith("sweep.")]]
    with tempfile.TemporaryDirectory() as t:
        out = Path(t) / "sweep"
        args = [sys.executable, "-m", "dlrunner", "-m", "sweep=importance", f"sweep.time_budget={minutes}m",
                "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir={out}", "data=mnist1d", *extra]
        t0 = time.time()
        res = subprocess.run(args, cwd=t, env=_env(), capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"the sweep failed: {res.stderr[-2000:]}")
        r = summarize(out, time.time() - t0)
        r.pop("trial_rows")  # (written beside the JSON below)
        with (out / "trials.csv").open() as f:
            r["stages"] = sorted({row["stage"] for row in csv.DictReader(f)})
        name = name or "-".join("".join(c for c in e if c.isalnum() or c in "._") for e in extra)
        path = ROOT / "bench" / "results" / f"cpu-search-bar{'-' + name if name else ''}.json"
        # every trial beside the result (run folders are local paths: dropped)
        with (out / "trials.csv").open() as f, path.with_name(path.stem + "-trials.csv").open("w", newline="") as g:
            rows = list(csv.DictReader(f))
            w = csv.DictWriter(g, fieldnames=[k for k in rows[0] if k != "run_dir"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        scored = score(Path(t), job, r["pick"], TEST_SEEDS, jobs)
        final = score(Path(t), job, r["pick"], TEST_SEEDS, jobs, final=True)  # `dlrun mode=final` on the pick
    r.update(command="dlrun " + " ".join(args[3:]), test=[scored[s]["test"] for s in TEST_SEEDS],
             final_test=[final[s]["test"] for s in TEST_SEEDS])
    r["test_mean"] = sum(r["test"]) / len(TEST_SEEDS)
    r["final_test_mean"] = sum(r["final_test"]) / len(TEST_SEEDS)
    path.write_text(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d"), "bar": r}, indent=2))
    print(f"{r['wall_s']:.0f} s, {r['trials']} trials ({r['configurations']} configurations), pick {r['pick']}, "
          f"test {' / '.join(f'{v:.3f}' for v in r['test'])}, mean {r['test_mean']:.4f}; mode=final (train+val) "
          f"test {' / '.join(f'{v:.3f}' for v in r['final_test'])}, mean {r['final_test_mean']:.4f}\nwrote {path}")


if __name__ == "__main__":
    if "--table" in sys.argv:  # every job measured, from cpu-search*.json (one file per `--search` run)
        table(measured())
        print()
        replicates(measured())
    elif "--bar" in sys.argv:  # python bench/search.py [--name NAME] --bar [OVERRIDE...]: the 30-minute MNIST-1D sweep
        i = sys.argv.index("--bar")
        bar(sys.argv[i + 1:], name=sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv[:i] else None)
    elif "--variant" in sys.argv:  # python bench/search.py --variant JOB SETTING...
        i = sys.argv.index("--variant")
        variant(sys.argv[i + 1], sys.argv[i + 2:])
    else:
        print("run it with `make bench ARGS=\"--only search\"`")
