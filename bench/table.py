"""Print the README's benchmark table from bench/results/cpu-all.json (written by `make bench`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

r = json.loads((Path(__file__).parent / "results" / (sys.argv[1] if len(sys.argv) > 1 else "cpu-all.json")).read_text())
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
