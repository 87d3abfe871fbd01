"""Print the README's benchmark tables from bench/results/*.json (written by `make bench`; a section
measured alone with `make bench ARGS="--only tricks"` lands in cpu-tricks.json and is merged here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

results = Path(__file__).parent / "results"
r = json.loads((results / (sys.argv[1] if len(sys.argv) > 1 else "cpu-all.json")).read_text())
for part in sorted(results.glob("cpu-*.json")):  # newer single-section runs fill in what is missing
    extra = json.loads(part.read_text())
    for key, value in extra.items():
        if key == "tricks":  # per-trick results merge (a trick re-measured alone replaces its row)
            r.setdefault("tricks", {}).update(value)
        elif key not in ("machine", "date") and key not in r:
            r[key] = value
q, o = r["quality"], r["overhead"]
print(f"Measured by `make bench` on {r['date']}: {r['machine']} (a shared 2-core VM; epoch times there")
print("vary by several percent from run to run). Raw results: `bench/results/cpu-all.json`.\n")
print("| job | figure | value |\n|---|---|---|")
for name, d in q.items():
    if name.startswith("digits"):
        print(f"| `{d['command']}` (digits + lenet, defaults, 20 epochs) | best val acc; first epoch >= 97%; "
              f"wall time incl. start-up | {d['best_val_acc'] * 100:.1f}%; epoch {d['first_epoch_val_acc_ge_0.97']}; "
              f"{d['wall_s_incl_startup']:.1f} s |")
m = q["mnist1d_conv1d"]
print(f"| `{m['command']}` | test acc (best.pt); wall time | {m['test_acc'] * 100:.1f}%; {m['wall_s_incl_startup']:.1f} s |")
for key, label in (("digits_lenet", "lenet / digits"), ("mnist1d_conv1d", "conv1d / mnist1d")):
    v = o[key]
    print(f"| overhead, {label}: dlrun epoch (train + val + checkpointing + metrics.csv) / hand-written loop "
          f"(`bench/handloop.py`: train + val), {v['rounds']} alternating epochs | median ratio; ratio of fastest "
          f"epochs | {v['ratio']:.3f}; {v['ratio_of_fastest']:.3f} ({v['dlrun_s_per_epoch'] * 1000:.0f} ms vs "
          f"{v['hand_s_per_epoch'] * 1000:.0f} ms median) |")
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
