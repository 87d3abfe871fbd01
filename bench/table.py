"""Print the README's benchmark tables from bench/results/*.json (written by `make bench`; a section
measured alone with `make bench ARGS="--only tricks"` lands in cpu-tricks.json and is merged here;
runs on a CUDA machine land in gpu-*.json and get their own tables). A section no file holds yet is
printed as "not yet measured"."""
from __future__ import annotations

import json
import sys
from pathlib import Path

results = Path(__file__).parent / "results"


def merged(first: dict, parts: list[Path]) -> dict:
    """`first`, with the sections it lacks (or only skipped) filled in from the other result files,
    and the sections a later single-section run re-measured (a newer `date`) replaced by it."""
    r = dict(first)
    for part in parts:  # newer single-section runs fill in what is missing or re-measured
        extra = json.loads(part.read_text())
        newer = extra.get("date", "") > first.get("date", "")
        for key, value in extra.items():
            if key == "tricks":  # per-trick results merge (a trick re-measured alone replaces its row)
                r.setdefault("tricks", {}).update(value)
            elif key not in ("machine", "date") and (key not in r or "skipped" in r[key] or newer):
                r[key] = value
                r.setdefault("measured_on", {})[key] = f"{extra['machine']}, {extra['date']}"
    return r


r = merged(json.loads((results / (sys.argv[1] if len(sys.argv) > 1 else "cpu-all.json")).read_text()),
           sorted(results.glob("cpu-*.json")))
gpu_files = sorted(results.glob("gpu-*.json"))
g = merged(json.loads(gpu_files[0].read_text()), gpu_files[1:]) if gpu_files else {}
q, o = r["quality"], r["overhead"]
used = {r.get("measured_on", {}).get(k, f"{r['machine']}, {r['date']}") for k in ("quality", "overhead", "precompute",
                                                                                  "determinism", "doctor")}
print(f"Measured by `make bench` on {' and '.join(sorted(used))} (a shared 2-core VM; epoch times there")
print("vary by several percent from run to run). Raw results: `bench/results/cpu-*.json`.\n")
print("| job | figure | value |\n|---|---|---|")
for name, d in q.items():
    if name.startswith("digits"):
        print(f"| `{d['command']}` (digits + lenet, defaults, 20 epochs) | best val acc; first epoch >= 97%; "
              f"wall time incl. start-up | {d['best_val_acc'] * 100:.1f}%; epoch {d['first_epoch_val_acc_ge_0.97']}; "
              f"{d['wall_s_incl_startup']:.1f} s |")
m = q["mnist1d_conv1d"]
print(f"| `{m['command']}` | test acc (best.pt); wall time | {m['test_acc'] * 100:.1f}%; {m['wall_s_incl_startup']:.1f} s |")
LABELS = {"digits_lenet": "lenet / digits", "mnist1d_conv1d": "conv1d / mnist1d",
          "cifar_resnet_cuda": "resnet / CIFAR-shaped (CUDA)"}
for key, v in o.items():
    sw = v.get("same_weights")
    same = "" if sw is None else (
        f"; final weights vs the hand loop's after {sw['epochs']} epochs from the same start over the same batches "
        f"(deterministic=true): {'identical' if sw['equal'] else 'max difference %.2g' % sw['max_abs_weight_diff']}")
    print(f"| overhead, {LABELS.get(key, key)}: dlrun epoch (train + val + checkpointing + metrics.csv) / hand-written "
          f"loop (`bench/handloop.py`: train + val), {v['rounds']} alternating epochs | median ratio; ratio of fastest "
          f"epochs{'; same weights' if sw else ''} | {v['ratio']:.3f}; {v['ratio_of_fastest']:.3f} "
          f"({v['dlrun_s_per_epoch'] * 1000:.0f} ms vs {v['hand_s_per_epoch'] * 1000:.0f} ms median){same} |")
if "precompute" in r:
    p = r["precompute"]
    print(f"| `trick=precompute`: resnet (width 32) head on digits 5-9 from a digits 0-4 run, frozen layers cached "
          f"vs run every step (`trick.precompute.cache=false`) | median epoch time; best val acc | "
          f"{p['cache_true']['median_epoch_s'] * 1000:.0f} ms vs {p['cache_false']['median_epoch_s'] * 1000:.0f} ms "
          f"({p['speedup']}x); {p['cache_true']['best_val_acc'] * 100:.1f}% vs {p['cache_false']['best_val_acc'] * 100:.1f}% |")
print(f"| `dlrun debug=smoke seed=7` twice | identical metrics.csv | {r['determinism']['identical_metrics']} |")
for name, d in r.get("doctor", {}).items():
    c = d["counts"]
    slow = max(d["seconds"], key=d["seconds"].get)
    print(f"| `{d['command']}` ({name}) | exit status; checks passed / warned / failed / skipped; wall time incl. "
          f"start-up (slowest check) | {d['exit']}; {c['pass']} / {c['warn']} / {c['fail']} / {c['skip']}; "
          f"{d['wall_s_incl_startup']:.1f} s ({slow} {d['seconds'][slow]:.1f} s) |")

if "tricks" in r:
    import yaml  # PyYAML comes with hydra-core

    conf = Path(__file__).resolve().parent.parent / "conf" / "trick"
    print("\n\n### Tricks, measured\n")
    print("Each trick against the same run without it (same seed 0, same epochs), best validation accuracy and")
    print("wall time including start-up. Baselines: lenet on digits for 20 epochs (`dlrun`), or a small resnet")
    print("for 8 epochs where the trick needs one; for gradual_unfreezing and precompute, that resnet started")
    print("from a run on digits 0-4 (`model.init_from`), trained on digits 5-9 at lr 1e-2 with and without the")
    print("trick (without: ordinary fine-tuning of every layer). `plain` is the same run's accuracy without the trick's")
    print("evaluation (EMA/SWA weights, TTA views, the ensemble). Single runs on a noisy shared CPU:")
    print("differences of a point or two are within seed-to-seed noise.\n")
    print("| trick | what it does | knobs | val acc with (plain) / without | wall time with / without |")
    print("|---|---|---|---|---|")
    for name, t in r["tricks"].items():
        lines = (conf / f"{name}.yaml").read_text().splitlines()
        what = lines[0].lstrip("# ").strip()
        knobs = ", ".join(f"`{k}`" for k in yaml.safe_load("\n".join(lines))[name] if not k.startswith("_")) or "-"
        if "error" in t:
            print(f"| `{name}` | {what} | {knobs} | refused: {' '.join(t['error'])} | |")
            continue
        b = t["baseline"]
        plain = f" ({t['best_val_plain_acc'] * 100:.1f})" if t.get("best_val_plain_acc") is not None else ""
        print(f"| `{name}` | {what} | {knobs} | {t['best_val_acc'] * 100:.1f}{plain} / {b['best_val_acc'] * 100:.1f} % "
              f"| {t['wall_s']:.1f} / {b['wall_s']:.1f} s |")


def heading(title: str, text: str, command: str, note: str = "") -> None:
    print(f"\n\n### {title}\n")
    print(text)
    print(f"\nRun it: `{command}`{note}.\n")


def measured(res: dict, key: str) -> dict | None:
    """The section's results, or None (and the placeholder printed) when there are none."""
    value = res.get(key)
    if not value or "skipped" in value:
        why = f" (last run: skipped, {value['skipped']})" if value and "skipped" in value else ""
        print(f"Not yet measured{why}.")
        return None
    return value


def on(res: dict, key: str) -> str:
    where = res.get("measured_on", {}).get(key) or f"{res['machine']}, {res['date']}"
    return f"Measured on {where}."


def lightning_table(res: dict) -> None:
    lt = measured(res, "lightning")
    if lt is None:
        return
    print(f"{on(res, 'lightning')} Lightning {lt['lightning_version']}.\n")
    print("| job | dlrun | dlrun, checkpoint every epoch | Lightning | Lightning, dlrun's batches | dlrun / Lightning "
          "(median; fastest) | final val acc: dlrun / Lightning / Lightning with dlrun's batches |")
    print("|---|---|---|---|---|---|---|")
    for name, v in lt.items():
        if name == "lightning_version":
            continue
        ms = {k: f"{v[f'{k}_s_per_epoch'] * 1000:.0f} ms" for k in
              ("dlrun", "dlrun_ckpt_every_epoch", "lightning", "lightning_dlrun_batches")}
        print(f"| {name.replace('_', ' / ', 1)} ({v['epochs']} epochs x {v['rounds']} rounds) | {ms['dlrun']} | "
              f"{ms['dlrun_ckpt_every_epoch']} ({v['ratio_ckpt_every_epoch']:.3f}) | {ms['lightning']} | "
              f"{ms['lightning_dlrun_batches']} ({v['ratio_dlrun_batches']:.3f}) | "
              f"{v['ratio']:.3f}; {v['ratio_of_fastest']:.3f} | {v['dlrun_val_acc'] * 100:.1f} / "
              f"{v['lightning_val_acc'] * 100:.1f} / {v['lightning_dlrun_batches_val_acc'] * 100:.1f} % |")


def tta_table(res: dict) -> None:
    t = measured(res, "tta")
    if t is None:
        return
    print(f"{on(res, 'tta')}\n")
    print("| job | target val acc | runs that reached it | epochs (median) | loop seconds to it (median) "
          "| wall seconds to it, incl. start-up (median) |")
    print("|---|---|---|---|---|---|")
    for v in t.values():
        f = (lambda x, d=1: "-" if x is None else f"{x:.{d}f}")
        print(f"| `{v['command']}` ({v['device']}) | {v['target'] * 100:.0f}% | {v['reached']} | "
              f"{f(v['median_epoch'], 0)} | {f(v['median_loop_s'], 2)} | {f(v['median_wall_s'])} |")


def scaling_table(res: dict) -> None:
    sc = measured(res, "scaling")
    if sc is None:
        return
    print(f"{on(res, 'scaling')}\n")
    print("| job | doubled | values | ms per epoch | ratio to the previous | train samples / s |")
    print("|---|---|---|---|---|---|")
    for name, v in sc.items():
        job, knob = name.split(" ", 1)
        rows = v["rows"]
        values = " / ".join(str(x["value"]) for x in rows)
        ms = " / ".join(f"{x['s_per_epoch'] * 1000:.0f}" for x in rows)
        growth = " / ".join(f"x{x['ratio_to_previous']:.2f}" for x in rows[1:])
        rate = " / ".join(str(x["samples_per_s"]) for x in rows)
        print(f"| {job.replace('_', ' / ', 1)} ({v['device']}) | `{knob}` | {values} | {ms} | {growth} | {rate} |")


def gpu_table(res: dict) -> None:
    gp = measured(res, "gpu")
    if gp is None:
        return
    peak = f"{gp['peak_bf16_tflops']:.0f} TFLOP/s" if gp["peak_bf16_tflops"] else "not in bench/measure.py's table"
    print(f"{on(res, 'gpu')} {gp['gpu']} (dense bf16 peak: {peak}); `{' '.join(gp['model'])}`, "
          f"{gp['timed_steps']} timed steps after {gp['warmup_steps']}.\n")
    print("| variant | batch | images / s | ms per step | GFLOP per image (fwd + bwd) | TFLOP/s | MFU | peak memory |")
    print("|---|---|---|---|---|---|---|---|")
    for x in gp["rows"]:
        mfu = "-" if x["mfu"] is None else f"{x['mfu'] * 100:.1f}%"
        print(f"| {x['variant']} | {x['batch_size']} | {x['images_per_s']} | {x['step_ms']} | {x['gflops_per_image']} | "
              f"{x['tflops_per_s']} | {mfu} | {x['peak_mem_gib']} GiB |")


def startup_table(res: dict) -> None:
    st = measured(res, "startup")
    if st is None:
        return
    sm, mr, hp, doc = st["smoke"], st["multirun"], st["help"], st["doctor"]
    fixed = [j["fixed_s"] for j in mr["jobs"][1:]]
    t = sm["pairs"][len(sm["pairs"]) // 2]["dlrun_timings"] or {}
    parts = ", ".join(f"{k} {v:.2f}" for k, v in t.items() if k not in ("total",))
    print(f"{on(res, 'startup')}\n")
    print("| what | measured | bar |\n|---|---|---|")
    print(f"| `dlrun debug=smoke` / `bench/handsmoke.py`, whole processes, {len(sm['pairs'])} alternated pairs | "
          f"median ratio {sm['median_ratio']:.2f} ({sm['median_dlrun_s']:.1f} s vs {sm['median_hand_s']:.1f} s) | <= 1.0 |")
    print(f"| fixed cost per job of a {len(mr['jobs'])}-job multirun of the default job at 5 epochs (jobs 2-{len(mr['jobs'])}: "
          f"span - epochs) | median {mr['median_fixed_s_jobs_2_on']:.2f} s ({', '.join(f'{x:.2f}' for x in fixed)}) | <= 0.3 s |")
    print(f"| `dlrun --help` (`python -c \"import torch\"`: {hp['import_torch_s']:.2f} s) | {hp['help_s']:.2f} s | <= 1.0 s |")
    print(f"| `dlrun mode=doctor`, the default job | {doc['median_s']:.1f} s | <= 5 s |")
    print(f"\nWhere the middle smoke run's time went (`summary.json` `timings`, seconds; `plots` is drawn beside "
          f"the rest): {parts}.")


heading("Start-up and fixed cost",
        "What a run costs besides its epochs (`bench/startup.py`). `dlrun debug=smoke` against the same job\n"
        "written by hand (`bench/handsmoke.py`: scikit-learn's digits upsampled and normalized, a quarter of\n"
        "it, LeNet, AdamW 3e-4, 2 epochs, a saved checkpoint), whole processes alternated after one untimed\n"
        "run of each; the fixed cost of the jobs of a multirun (each job from its start to the next job's,\n"
        "less its epochs); `dlrun --help`; the doctor on the default job.",
        'make bench ARGS="--only startup"')
startup_table(r)
heading("Against PyTorch Lightning",
        "The same job under Lightning (`bench/lightning_job.py`): the model with the same initial weights,\n"
        "the same data tensors, batch size, AdamW at 3e-4, fp32, validation every epoch; Lightning with its\n"
        "defaults (ModelCheckpoint writing every epoch, CSV logger), progress bar off. Time per epoch (start to\n"
        "start: train, validation, checkpoint, logging), the median over whole runs alternated in rounds, the\n"
        "first epoch of each run left out. `Lightning` is fed as a Lightning user writes it (a DataLoader over\n"
        "a TensorDataset); `Lightning, dlrun's batches` gets dlrun's on-device batches in the same order, which\n"
        "leaves the loops alone to compare (same start, same batches: its final accuracy should be dlrun's).\n"
        "dlrun writes checkpoints at most every `checkpoint_interval` (10) seconds; `checkpoint every epoch`\n"
        "is `checkpoint_interval=0`. In brackets: that column's ratio, dlrun with checkpoints every epoch /\n"
        "Lightning, and dlrun / Lightning with dlrun's batches. Bar: dlrun / Lightning <= 1.",
        'pip install -e ".[bench]"; make bench ARGS="--only lightning"')
lightning_table(r)
if g.get("lightning"):
    lightning_table(g)
heading("Time to accuracy",
        "Seconds until the validation accuracy first reaches the target, on the bundled data sets, with\n"
        "dlrun's defaults and with `trick=[lr_finder,onecycle]` (the LR range test picks onecycle's peak), the\n"
        "median over seeds 0-2 of the runs that reached it. Loop seconds: metrics.csv's `time` (train +\n"
        "validation of each epoch) summed up to that epoch; wall seconds: the whole `dlrun` process\n"
        "(interpreter, data, LR range test, checkpoints, end-of-run plots) less the epochs after it.",
        'make bench ARGS="--only tta"')
tta_table(r)
if g.get("tta"):
    tta_table(g)
heading("Scaling",
        "Median time per epoch (train + validation + checkpoint + metrics.csv, after the first of 6 epochs)\n"
        "as one knob doubles: the data (`data.fraction`, every split), the model (`model.width`) and the\n"
        "batch (`data.batch_size`). Ideal ratios: x2 for the data; x2-4 for the width (conv layers cost\n"
        "width x width); below 1 for the batch while the device has cores to spare.",
        'make bench ARGS="--only scaling"')
scaling_table(r)
if g.get("scaling"):
    scaling_table(g)
heading("GPU throughput",
        "Training throughput of dlrun's loop (`loop.train_epoch`) on 50,000 CIFAR-shaped images generated\n"
        "locally (`bench/synthetic.py`), torchvision's ResNet-18 (3x3 stem), at batch 256-1024 in bf16 +\n"
        "channels_last, also compiled, with the data on the device (dlrun's default for in-memory data) or\n"
        "through DataLoader workers from host memory. MFU: the model's FLOPs per step (forward + backward,\n"
        "`torch.utils.flop_counter`) per second over the GPU's dense bf16 peak (`bench/measure.py`).",
        'make bench ARGS="--only gpu"', " on a machine with CUDA (elsewhere it records `skipped: no CUDA`)")
gpu_table(g)
if r.get("search"):  # bench/search.py: one file per job measured (cpu-search-<job>.json), merged here
    sys.path.insert(0, str(Path(__file__).parent))
    from search import measured as search_measured, table as search_table

    heading("Search: the importance sweep against random search and TPE",
            "Same space, budget, job, launcher (joblib, 2 trials at a time, 1 thread each) and pick rule (the\n"
            "2 best points re-run with seed 1, best 2-seed val mean); each pick trained with seeds 2, 3, 4 and\n"
            "scored on the test split (`eval_test=true`).", 'make bench ARGS="--only search"')
    search_table(search_measured())
