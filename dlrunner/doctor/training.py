"""The checks that train: overfit one batch (and classify the curve), the input-zeroed and
label-shuffled baselines, and memorizing a small subset with regularization off."""
from __future__ import annotations

import math
import statistics
import time

import torch

from dlrunner.doctor.core import Exam, Finding


def curve_shape(losses: list[float], accs: list[float]) -> str:
    """Classify a single-batch training curve (REFERENCE thresholds):
    converges: final < 1% of initial, or 100% batch accuracy with the loss below half its start;
    explodes: non-finite or > 10x initial;
    goes up: last-20% median > 1.1x first-10% median; oscillates: > 40% sign flips of the loss delta
    with swings > 20% of the mean; plateaus: < 1% gain over the last 100 steps while above 10% of
    initial; slow: still improving, not done."""
    init = losses[0]
    if not all(math.isfinite(v) for v in losses) or max(losses) > 10 * max(init, 1e-8):
        return "explodes"
    if min(losses) < 0:  # not a loss to minimize towards 0 (a flipped sign): its size is the error
        return "explodes" if abs(min(losses)) > 10 * max(abs(init), 1e-8) else "goes up"
    tail = max(1, len(losses) // 10)
    if min(losses[-tail:]) < 0.01 * init or (max(accs[-tail:]) >= 1.0 and losses[-1] < 0.5 * init):
        return "converges"  # 100% accuracy with the loss stuck above half its start is the softmax signature
    first = statistics.median(losses[:max(1, len(losses) // 10)])
    last = statistics.median(losses[-max(1, len(losses) // 5):])
    if last > 1.1 * first:
        return "goes up"
    deltas = [b - a for a, b in zip(losses, losses[1:])]
    flips = sum((a > 0) != (b > 0) for a, b in zip(deltas, deltas[1:])) / max(len(deltas) - 1, 1)
    swing = statistics.mean(abs(d) for d in deltas) / max(statistics.mean(losses), 1e-12)
    if flips > 0.4 and swing > 0.2:
        return "oscillates"
    window = min(100, len(losses) // 2)
    start = losses[-window - 1]
    if (start - losses[-1]) / max(abs(start), 1e-12) < 0.01 and losses[-1] > 0.1 * init:
        return "plateaus"
    return "slow"


def fit_batch(ex: Exam, steps: int, lr_factor: float, extend: int = 4) -> dict:
    """Train on the fixed first batch; a curve that is still improving ("slow") gets up to
    `extend` times the steps before it is judged."""
    ex.reset()
    opt = ex.optimizer(lr_factor)
    losses, accs = [], []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        for _ in range(steps * extend):
            if len(losses) >= steps and len(losses) % steps == 0 and curve_shape(losses, accs) != "slow":
                break
            loss, acc = ex.step(opt, ex.x, ex.y)
            losses.append(loss)
            accs.append(acc)
            if not math.isfinite(loss) or (len(losses) > 10 and abs(loss) > 100 * max(abs(losses[0]), 1e-8)):
                break  # exploded (either sign): the rest of the curve adds nothing but time
            if acc >= 1.0 and len(losses) >= 10 and loss < 0.5 * losses[0]:  # converged: the rest of the budget is not needed
                break
    ex.step_time = (time.perf_counter() - t0) / max(len(losses), 1)
    ex.reset()
    shape = curve_shape(losses, accs)
    return {"lr": ex.lr * lr_factor, "factor": lr_factor, "shape": shape, "losses": losses,
            "initial": losses[0], "final": losses[-1], "acc": accs[-1]}


# The seeds' causes for each failure shape, in their order; `evidence` ranks them later.
CAUSES = {
    "goes up": ["flipped loss or gradient sign", "learning rate too high", "softmax over the wrong dimension"],
    "explodes": ["numerical instability (log/exp/div)", "learning rate too high"],
    "oscillates": ["corrupted labels", "learning rate too high"],
    "plateaus": ["learning rate too low", "gradients not passing through the model", "too much regularization",
                 "incorrect inputs to the loss function", "corrupted labels"],
    "slow": ["learning rate too low", "too much regularization", "model too small"],
}


def overfit_one_batch(ex: Exam) -> Finding:
    f = Finding("overfit", "Single-batch overfit")
    steps = int(ex.opts.get("overfit_steps", 200))
    runs = [fit_batch(ex, steps, 1.0)]
    if runs[0]["shape"] != "converges":
        for factor in (0.1, 10.0):
            runs.append(fit_batch(ex, steps, factor, extend=1))
        # one more step in the direction that helped, when it helped without converging
        lower, higher = runs[1], runs[2]
        best = min((lower, higher), key=lambda r: r["final"] if math.isfinite(r["final"]) else float("inf"))
        if best["shape"] != "converges" and math.isfinite(best["final"]) and best["final"] < 0.5 * runs[0]["final"]:
            runs.append(fit_batch(ex, steps, best["factor"] ** 2, extend=1))
    f.details["runs"] = [{k: (v[:: max(1, len(v) // 50)] if k == "losses" else v) for k, v in r.items()} for r in runs]
    main = runs[0]
    f.details["shape"] = main["shape"]
    working = [r for r in runs if r["shape"] == "converges"]
    f.details["working_factor"] = working[0]["factor"] if working else None
    desc = (f"{len(main['losses'])} steps on one batch of {len(ex.y)} at lr {main['lr']:.1e}: loss "
            f"{main['initial']:.3f} -> {main['final']:.3g}, batch accuracy {100 * main['acc']:.0f}% ({main['shape']})")
    if main["shape"] == "converges":
        f.add("pass", desc)
        return f
    ok = [r for r in runs[1:] if r["shape"] == "converges"]
    others = ", ".join(f"x{r['factor']:g}: {r['shape']} ({r['initial']:.3f} -> {r['final']:.3g})" for r in runs[1:])
    if ok:
        good = ok[0]
        direction = "too high" if good["factor"] < 1 else "too low"
        f.details["diagnosis"] = f"learning rate {direction}"
        f.add("fail", desc + f"; at lr {good['lr']:.1e} it converges ({others}): the learning rate is {direction}",
              f"set optim.lr={good['lr']:.1e} or run `dlrun mode=lr_find`")
    else:
        f.details["diagnosis"] = "bug"
        f.add("fail", desc + f"; other learning rates do not fix it ({others}): likely a bug, not the LR",
              "see the ranked causes below")
    return f


def _train_steps(ex: Exam, steps: int, zero_inputs: bool = False, shuffle_labels: bool = False,
                 lr_factor: float = 1.0) -> dict:
    """A short plain run over the training batches; val accuracy at the end."""
    ex.reset()
    opt = ex.optimizer(lr_factor)
    g = torch.Generator().manual_seed(1)
    first = last = None
    done, epoch = 0, 0
    with torch.random.fork_rng(devices=[]):
        while done < steps:
            for _, (x, y) in ex.job.train.iterate(epoch):
                if zero_inputs:
                    x = torch.zeros_like(x)
                if shuffle_labels:
                    y = y[torch.randperm(len(y), generator=g).to(y.device)]
                loss, _ = ex.step(opt, x, y)
                first = loss if first is None else first
                last = loss
                done += 1
                if done >= steps:
                    break
            epoch += 1
    if zero_inputs:
        acc = _zero_acc(ex)
    else:
        acc = ex.accuracy(ex.job.val)
    ex.reset()
    return {"val_acc": acc, "first_loss": first, "last_loss": last, "steps": done}


@torch.no_grad()
def _zero_acc(ex: Exam) -> float:
    ex.model.eval()
    correct = n = 0
    for _, (x, y) in ex.job.val.iterate(0):
        correct += int((ex.model(torch.zeros_like(x)).argmax(1) == y).sum())
        n += len(y)
        if n >= 2048:
            break
    ex.model.train()
    return correct / max(n, 1)


def budget(ex: Exam, steps: int, share: float, runs: int = 1, floor: int = 40) -> int:
    """Fewer steps for a slow model: `share` of doctor.time_budget seconds, but at least `floor`."""
    return limited(ex, steps, share, runs, floor)[0]


def limited(ex: Exam, steps: int, share: float, runs: int = 1, floor: int = 40) -> tuple[int, str | None]:
    """budget(), and what set it: None when the step budget stands, else the time budget's setting."""
    seconds = float(ex.opts.get("time_budget", 0) or 0)
    t = getattr(ex, "step_time", None)
    if not seconds or not t:
        return steps, None
    n = max(min(floor, steps), min(steps, int(seconds * share / (runs * t))))
    return n, (f"doctor.time_budget={seconds:g} s ({t * 1000:.0f} ms a step)" if n < steps else None)


def baselines(ex: Exam) -> Finding:
    f = Finding("baselines", "Baselines")
    asked = int(ex.opts.get("baseline_steps", 100))
    steps, cut = limited(ex, asked, 0.5, runs=3)
    overfit = ex.findings.get("overfit")
    # train where one batch could be fit: an LR problem is reported by the overfit check, not here
    factor = (overfit.details.get("working_factor") if overfit else None) or 1.0
    real = _train_steps(ex, steps, lr_factor=factor)
    shuf = _train_steps(ex, steps, shuffle_labels=True, lr_factor=factor)
    # a net that sees no input gives every sample one class: its accuracy is at most the largest
    # class's share of val, so when the real run beats that bound the zeroed run cannot change the verdict
    bound = _largest_class_share(ex)
    if real["val_acc"] - max(bound, shuf["val_acc"]) >= 0.02:
        zero = {"val_acc": bound, "bound": True, "steps": 0}
        zero_text = f"inputs zeroed at most {100 * bound:.1f}% (the largest class's share: not trained)"
    else:
        zero = _train_steps(ex, steps, zero_inputs=True, lr_factor=factor)
        zero_text = f"inputs zeroed {100 * zero['val_acc']:.1f}%"
    f.details |= {"real": real, "zeroed_inputs": zero, "shuffled_labels": shuf, "lr": ex.lr * factor}
    maj = getattr(ex, "majority_acc", None)
    at = f" at lr {ex.lr * factor:.1e} (where one batch was fit)" if factor != 1.0 else ""
    cut = f" (cut from doctor.baseline_steps={asked} by {cut})" if cut else ""
    ev = (f"val accuracy after {real['steps']} steps{cut}{at}: real {100 * real['val_acc']:.1f}%, {zero_text}, "
          f"labels shuffled {100 * shuf['val_acc']:.1f}%" + (f", majority class {100 * maj:.1f}%" if maj is not None else ""))
    margin = real["val_acc"] - max(zero["val_acc"], shuf["val_acc"])
    f.details["margin"] = margin
    if margin >= 0.02:
        f.add("pass", ev)
        return f
    learned = real["last_loss"] < 0.9 * real["first_loss"]
    optimizes = overfit is not None and overfit.details.get("working_factor") is not None
    if learned or optimizes:
        f.add("fail", ev + f": the real run is no better than a baseline ({100 * margin:+.1f} points) although "
                           "training works (" + ("its loss falls" if learned else "one batch is memorized") + ")",
              "the labels do not match the inputs (shuffled or misaligned when loading) or the inputs carry no "
              "signal: look at samples.png and check how x and y are paired")
    else:
        f.add("warn", ev + f": the real run did not learn in {real['steps']} steps either (train loss "
                           f"{real['first_loss']:.3f} -> {real['last_loss']:.3f}), so this is inconclusive",
              "fix the optimization first (see the single-batch overfit)")
    return f


def _largest_class_share(ex: Exam, limit: int = 2048) -> float:
    """The largest class's share of the val samples an accuracy is measured on (up to `limit`)."""
    counts: dict[int, int] = {}
    n = 0
    for _, (_, y) in ex.job.val.iterate(0):
        for c, k in zip(*torch.unique(y.reshape(-1).cpu(), return_counts=True)):
            counts[int(c)] = counts.get(int(c), 0) + int(k)
        n += len(y)
        if n >= limit:
            break
    return max(counts.values()) / n if n else 1.0


def rank_causes(ex: Exam) -> list[dict]:
    """The overfit failure's causes from the seeds, those with evidence from other checks first."""
    fo = ex.findings.get("overfit")
    if fo is None or fo.details.get("shape") in (None, "converges"):
        return []
    shape = fo.details["shape"]
    causes = list(CAUSES.get(shape, []))
    diag = fo.details.get("diagnosis", "")

    def st(key):
        return ex.findings[key].status if key in ex.findings else "pass"

    def text(key, word):
        return key in ex.findings and any(word in i.evidence for i in ex.findings[key].items if i.status != "pass")

    evidence = {
        "flipped loss or gradient sign": text("loss_init", "negative") and "loss at init is negative",
        "learning rate too high": ("lower LR converges" if "too high" in diag else "")
        or (text("gradients", "too high") and "update/weight ratio above 1e-1"),
        "learning rate too low": ("higher LR converges" if "too low" in diag else "")
        or (text("gradients", "too low") and "update/weight ratio below 1e-5"),
        "softmax over the wrong dimension": text("loss_inputs", "wrong dimension") and "columns sum to 1",
        "incorrect inputs to the loss function": st("loss_inputs") == "fail" and "loss-input check failed",
        "numerical instability (log/exp/div)": st("numerics") == "fail" and "a module produced NaN/Inf",
        "gradients not passing through the model": st("gradients") == "fail" and "gradient-flow check failed",
        "corrupted labels": st("baselines") == "fail" and "real run no better than shuffled labels",
        "the model ignores its input": text("model", "ignores its input") and "different inputs, one output",
        "the inputs carry no signal": text("data", "identical") and "every training input is the same",
        "too much regularization": _regularized(ex) or "",
        "model too small": st("capacity") in ("warn", "fail") and "cannot memorize a small subset",
    }
    direct = ("the model ignores its input", "the inputs carry no signal")  # a signature names these outright
    strong = (*direct, "flipped loss or gradient sign", "incorrect inputs to the loss function",
              "gradients not passing through the model", "numerical instability (log/exp/div)", "corrupted labels")
    causes += [c for c in strong if evidence.get(c) and c not in causes]  # whatever the curve's shape
    # a failed check is direct evidence; an LR rerun that helped or an odd update ratio is weaker
    weak = ("learning rate too high", "learning rate too low", "too much regularization", "model too small")
    weight = {c: (0 if not evidence.get(c) else 1 if c in weak else 3 if c in direct else 2) for c in causes}
    ranked = sorted(causes, key=lambda c: (-weight[c], causes.index(c)))
    return [{"cause": c, "evidence": evidence.get(c) or ""} for c in ranked]


def _regularized(ex: Exam) -> str:
    parts = []
    drop = [m.p for m in ex.model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0]
    if drop:
        parts.append(f"dropout {max(drop):g}")
    wd = max((g.get("weight_decay", 0) or 0) for g in ex.job.optimizer.param_groups)
    if wd > 0.01:
        parts.append(f"weight decay {wd:g}")
    parts += [t.name for t in ex.job.tricks if t.name in ("mixup", "label_smoothing")]
    return ", ".join(parts)
