"""The logging check: the loss is a pure function, each epoch delivers every sample once, and the
logged (sample-weighted) epoch loss equals an independent per-sample pass."""
from __future__ import annotations

import torch

from dlrunner.doctor.core import Exam, Finding
from dlrunner.engine.evaluate import evaluate


def logging_sanity(ex: Exam) -> Finding:
    f = Finding("logging", "Logging sanity")
    ex.reset()
    loss_fn, model = ex.job.loss_fn, ex.model
    model.eval()
    with torch.no_grad(), ex.job.precision.autocast():
        out = model(ex.x).float()
    a, b = float(loss_fn(out, ex.y)), float(loss_fn(out, ex.y))
    if abs(a - b) > 1e-6 * max(1.0, abs(a)):
        f.add("fail", f"the loss gives {a:.4f} then {b:.4f} on the same batch: it keeps state between calls "
                      "(a running sum or counter that is never reset)",
              "make the loss a pure function of (output, target); reset metric accumulators every epoch")
    # samples per epoch, twice
    counts = [sum(len(y) for _, (_, y) in ex.job.train.iterate(e)) for e in (0, 1)]
    n = ex.job.train.num_samples
    f.details["samples_per_epoch"] = counts
    if any(c != n for c in counts):
        f.add("fail", f"epochs deliver {counts} samples, the split has {n}", "every sample once per epoch")
    else:
        f.add("pass", f"each epoch delivers the {n} training samples once")
    # the logged epoch loss (sample-weighted meter) vs an independent per-sample full pass
    res = evaluate(model, ex.job.val, loss_fn, ex.job.precision, "val")
    total, count, correct = 0.0, 0, 0
    with torch.no_grad():
        for _, (x, y) in ex.job.val.iterate(0):
            with ex.job.precision.autocast():
                o = model(x).float()
            for i in range(len(y)):
                total += float(loss_fn(o[i:i + 1], y[i:i + 1]))
            correct += int((o.argmax(1) == y).sum())
            count += len(y)
    model.train()
    ind_loss, ind_acc = total / count, correct / count
    f.details |= {"logged": res, "independent": {"loss": ind_loss, "acc": ind_acc, "n": count}}
    if abs(res["val/loss"] - ind_loss) > 1e-3 * max(1.0, ind_loss) or abs(res["val/acc"] - ind_acc) > 1e-9 \
            or count != ex.job.val.num_samples:
        f.add("fail", f"logged val loss {res['val/loss']:.4f} / acc {res['val/acc']:.4f} vs an independent "
                      f"per-sample pass {ind_loss:.4f} / {ind_acc:.4f} over {count} samples",
              "epoch loss = sum(loss * batch) / N; check the loss's reduction")
    else:
        f.add("pass", f"epoch val loss {res['val/loss']:.4f} equals the per-sample full pass over {count} samples")
    ex.reset()
    return f
