"""The doctor over the bug zoo (tests/zoo.py): for each planted bug, whether `dlrun mode=doctor`
names it (the check and the phrase its test asserts) and, where a config change is the remedy,
whether `doctor.repair=true` cures it; the healthy jobs count false alarms. Writes
bench/results/doctor-zoo.json and prints the README's table.

    .venv/bin/python bench/doctor_zoo.py
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

Z = "tests.zoo."
NO_SLOW = ["doctor.skip=[baselines,capacity]"]
# name -> (overrides, where the name must appear: a check key or "cause", the phrase, a config remedy expected)
CASES = {
    "softmax before cross-entropy": ([f"model._target_={Z}softmax_head", *NO_SLOW], "model", "Softmax", False),
    "softmax over the wrong dim": ([f"model._target_={Z}softmax_wrong_dim", *NO_SLOW], "loss_inputs",
                                   "wrong dimension", False),
    "flipped loss sign": ([f"loss._target_={Z}FlippedSign", *NO_SLOW], "loss_init", "sign is flipped", False),
    "log of a negative (model)": ([f"model._target_={Z}LogOfNegative", *NO_SLOW], "numerics", "LogLayer", False),
    "log of raw logits (loss)": ([f"loss._target_={Z}NllOfLogits", *NO_SLOW], "numerics", "loss function produced",
                                 False),
    "NLL on raw logits": ([f"loss._target_={Z}NllOfRawLogits", *NO_SLOW], "loss_init", "NLL applied to raw logits",
                          False),
    "loss summed, not averaged": ([f"loss._target_={Z}SummedLoss", *NO_SLOW], "loss_init", "summed over the batch",
                                  False),
    "prediction/target broadcast": ([f"loss._target_={Z}BroadcastMSE", *NO_SLOW], "loss_inputs", "broadcast", False),
    "metric never reset": ([f"loss._target_={Z}RunningMeanLoss", *NO_SLOW], "logging", "keeps state", False),
    "detached layer": ([f"model._target_={Z}Detached", *NO_SLOW], "gradients", "get no gradient", False),
    ".data cuts the gradient": ([f"model._target_={Z}DataCut", *NO_SLOW], "gradients", "cuts the gradient at", False),
    "frozen layer": ([f"model._target_={Z}frozen_layer", *NO_SLOW], "gradients", "trained from scratch", False),
    "stuck in eval mode": ([f"model._target_={Z}StuckInEval", *NO_SLOW], "mode", "stuck in eval mode", False),
    "model ignores its input": ([f"model._target_={Z}IgnoresInput", *NO_SLOW], "model", "ignores its input", False),
    "head of the wrong width": ([f"model._target_={Z}wrong_width_head", *NO_SLOW], "model", "the data has 10 classes",
                                False),
    "functional tanh, saturated": ([f"model._target_={Z}FunctionalTanh", *NO_SLOW], "gradients",
                                   "(torch.tanh after fc1)`", False),
    "tanh saturated by raw features": (["data=tabular", "data.normalize=false", "model=mlp", "model.act=tanh",
                                        *NO_SLOW], "gradients", "saturate", True),
    "inputs 0-255, not normalized": ([f"data._target_={Z}unscaled", "data.normalize=false",
                                      f"model._target_={Z}healthy", *NO_SLOW], "data", "raw 0-255", True),
    "constant inputs": ([f"data._target_={Z}constant_inputs", f"model._target_={Z}healthy", *NO_SLOW], "data",
                        "identical", False),
    "labels shuffled": ([f"data._target_={Z}shuffled_labels", f"model._target_={Z}healthy",
                         "doctor.skip=[capacity]"], "baselines", "no better than a baseline", False),
    "labels independent of inputs": ([f"data._target_={Z}random_labels", f"model._target_={Z}healthy",
                                      "doctor.skip=[capacity]"], "baselines", "no better than a baseline", False),
    "too much dropout (0.9)": (["model.dropout=0.9", *NO_SLOW], "cause", "too much regularization", True),
    "learning rate far too high": (["optim=sgd", "optim.lr=30", *NO_SLOW], "cause", "learning rate too high", True),
    "learning rate far too low": (["optim.lr=1e-8", *NO_SLOW], "cause", "learning rate too low", True),
    "batch too small for BatchNorm (2)": ([f"model._target_={Z}BatchNormMLP", "data.batch_size=2",
                                           "doctor.skip=[baselines]"], "capacity", "batch too small for BatchNorm", True),
}
HEALTHY = {"lenet on digits (default)": [], "small BatchNorm net": [f"model._target_={Z}SmallBatchNormNet"],
           "mlp on tabular": ["data=tabular", "model=mlp"], "conv1d on mnist1d": ["data=mnist1d", "model=conv1d"]}
FIXED = ["doctor.overfit_steps=120", "doctor.baseline_steps=100", "doctor.time_budget=0"]


def _examine(overrides: list[str], tmp: Path, repair: bool):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dlrunner.build import build_job
    from dlrunner.doctor import examine
    from dlrunner.modes.doctor import attempt_repairs
    from dlrunner.reporting.rundir import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"out_dir={tmp}", "device=cpu", *FIXED, *overrides])
    job = build_job(cfg, torch.device("cpu"), lambda m: None)
    ex = examine(job, tmp, OmegaConf.to_container(cfg.doctor, resolve=True))
    repairs = attempt_repairs(ex, cfg, {}, tmp) if repair else []
    return ex, repairs


def _named(ex, where: str, phrase: str) -> bool:
    if where == "cause":
        return bool(ex.causes) and ex.causes[0]["cause"] == phrase
    f = ex.findings.get(where)
    return f is not None and any(i.status in ("warn", "fail") and phrase in i.evidence for i in f.items)


def main() -> None:
    import tempfile

    torch.set_num_threads(1)
    rows, t_all = [], time.time()
    with tempfile.TemporaryDirectory() as t:
        for name, (overrides, where, phrase, remedy) in CASES.items():
            t0 = time.time()
            ex, repairs = _examine(overrides, Path(t), repair=True)
            cured = [r for r in repairs if r.cured]
            rows.append({"case": name, "overrides": overrides, "named": _named(ex, where, phrase),
                         "config_remedy": remedy, "repaired": bool(cured),
                         "override": " ".join(cured[0].override) if cured else None,
                         "repairs": [vars(r) for r in repairs], "seconds": round(time.time() - t0, 1)})
            print(rows[-1]["case"], {k: rows[-1][k] for k in ("named", "repaired", "override", "seconds")}, flush=True)
        for name, overrides in HEALTHY.items():
            ex, _ = _examine(overrides, Path(t), repair=False)
            alarms = [f"{k}: {i.evidence}" for k, f in ex.findings.items() for i in f.items if i.status in ("warn", "fail")]
            rows.append({"case": name, "healthy": True, "alarms": alarms})
            print(name, alarms, flush=True)
    bugs = [r for r in rows if not r.get("healthy")]
    res = {"machine": f"{platform.machine()}, {torch.get_num_threads()} thread, torch {torch.__version__}",
           "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.time() - t_all), "rows": rows,
           "named": sum(r["named"] for r in bugs), "cases": len(bugs),
           "repairable": sum(r["config_remedy"] for r in bugs),
           "repaired": sum(r["repaired"] for r in bugs if r["config_remedy"]),
           "repaired_unexpected": sum(r["repaired"] for r in bugs if not r["config_remedy"]),
           "false_alarms": sum(len(r["alarms"]) for r in rows if r.get("healthy"))}
    out = ROOT / "bench" / "results" / "doctor-zoo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    print(table(res))


def table(res: dict) -> str:
    lines = ["| planted bug | named | config remedy | cured by doctor.repair |", "|---|---|---|---|"]
    for r in res["rows"]:
        if r.get("healthy"):
            continue
        cure = f"yes: `{r['override']}`" if r["repaired"] else ("no" if r["config_remedy"] else "-")
        lines.append(f"| {r['case']} | {'yes' if r['named'] else 'no'} | {'yes' if r['config_remedy'] else 'code'} "
                     f"| {cure} |")
    healthy = [r for r in res["rows"] if r.get("healthy")]
    lines.append(f"| **{res['cases']} planted bugs** | **{res['named']}/{res['cases']}** | {res['repairable']} "
                 f"| **{res['repaired']}/{res['repairable']}** |")
    lines.append("")
    lines.append(f"Healthy jobs ({', '.join(r['case'] for r in healthy)}): {res['false_alarms']} warnings.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
