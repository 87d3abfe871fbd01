"""The loss checks: its value at init against ln C (Karpathy 2019), a summed or sign-flipped loss,
NLL on raw logits, probabilities fed to a logits loss, a loss that ignores the labels or the order."""
from __future__ import annotations

import math
import warnings

import torch

from dlrunner.doctor import signatures
from dlrunner.doctor.core import Exam, Finding


def loss_at_init(ex: Exam) -> Finding:
    f = Finding("loss_init", "Loss at init")
    ex.reset()
    model, loss_fn = ex.model, ex.job.loss_fn
    losses, logit_std = [], []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for i, (x, y) in ex.job.train.iterate(0):
            with ex.job.precision.autocast():
                out = model(x)
            losses.append(float(loss_fn(out.float(), y)))
            logit_std.append(float(out.float().std()))
            if i >= 3:
                break
    ex.reset()  # BatchNorm buffers moved
    loss = sum(losses) / len(losses)
    uniform = float(loss_fn(torch.zeros(len(ex.y), ex.num_classes, device=ex.device), ex.y))
    f.details |= {"loss": loss, "uniform_loss": uniform, "ln_c": ex.ln_c, "logit_std": sum(logit_std) / len(logit_std)}
    ex.init_loss = loss
    if not math.isfinite(loss):
        f.add("fail", f"the loss at init is {loss}", "see the numerics check: it names the module")
        return f
    with torch.no_grad(), ex.job.precision.autocast():
        raw = signatures.nll_of_logits(loss_fn, model(ex.x).float(), ex.y)
    ex.reset()
    summed = signatures.summed_loss(uniform, len(ex.y), ex.ln_c)
    if raw or summed:
        f.add("fail", raw or summed, "F.cross_entropy(logits, y), or F.nll_loss(F.log_softmax(logits, 1), y)"
              if raw else "average over the batch (reduction='mean'): dlrun weights batch losses by their size")
        return f
    if uniform < 0 or loss < 0:
        f.add("fail", f"the loss is negative (at init {loss:.3f}; for a uniform prediction {uniform:.3f}, "
                      f"expected +ln C = {ex.ln_c:.3f}): its sign is flipped",
              "return the loss to minimize (e.g. F.cross_entropy(out, y), not its negative)")
        return f
    ratio = loss / uniform if uniform > 0 else float("inf")
    f.details["ratio"] = ratio
    ev = f"{loss:.3f} vs {uniform:.3f} for a uniform prediction (ln {ex.num_classes} = {ex.ln_c:.3f}): {ratio:.2f}x"
    if ratio > 1.5:
        f.add("warn", ev + f", logits std {f.details['logit_std']:.2f} (overconfident at init)",
              "initialize the last layer smaller (or zero) so the first steps are not spent undoing it")
    elif ratio < 0.5:
        f.add("warn", ev + " (too low: the loss may not be cross-entropy on logits, or labels leak into inputs)",
              "check the loss function and that the labels are not derived from the inputs")
    else:
        f.add("pass", ev)
    return f


def loss_inputs(ex: Exam) -> Finding:
    f = Finding("loss_inputs", "Loss inputs")
    ex.reset()
    model, loss_fn, x, y = ex.model, ex.job.loss_fn, ex.x, ex.y
    model.eval()
    with torch.no_grad(), ex.job.precision.autocast():
        out = model(x).float()
    model.train()
    judge_outputs(f, out, y, loss_fn, ex.num_classes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = loss_fn(out, y)
    shape_warn = [str(w.message) for w in caught if "size" in str(w.message).lower()]
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        f.add("fail", f"the loss returns {tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}, "
                      "not a scalar", "reduce it (mean over the batch)")
        return f
    if shape_warn:
        f.add("fail", f"prediction {tuple(out.shape)} and target {tuple(y.shape)} broadcast: {shape_warn[0][:120]}",
              "make the target the shape the loss expects")
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g).to(y.device)
    joint = float(loss_fn(out[perm], y[perm]))
    other = float(loss_fn(out, y.roll(1))) if len(torch.unique(y)) > 1 else float(loss)  # roll: never the identity
    if abs(joint - float(loss)) > 1e-4 * max(1.0, abs(float(loss))):
        f.add("warn", f"the loss changes when the batch is reordered ({float(loss):.4f} -> {joint:.4f})",
              "a loss should be a mean over samples; check for broadcasting or state kept between calls")
    same_rows = bool((out == out[:1]).all())  # a model that ignores its input: labels cannot matter either
    if len(torch.unique(y)) > 1 and abs(other - float(loss)) < 1e-7 and not same_rows:
        f.add("fail", "the loss does not change when the targets are shuffled: it ignores the labels",
              "pass the targets to the loss")
    return f


def judge_outputs(f: Finding, out: torch.Tensor, y: torch.Tensor, loss_fn, k: int) -> None:
    """What the model hands the loss (out: (N, C)): logits, probabilities, a softmax over the wrong
    dimension, or logits fed to an NLL loss; one line added to `f`."""
    rows_one = bool(torch.allclose(out.sum(1), torch.ones(len(out), device=out.device), atol=1e-3))
    cols_one = bool(torch.allclose(out.sum(0), torch.ones(out.shape[1], device=out.device), atol=1e-3))
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    floor = math.log(math.e + k - 1) - 1
    if in_unit and rows_one and len(out) != k:
        f.add("fail", f"the outputs are probabilities (all in [0, 1], each row sums to 1) fed to a logits loss; "
                      f"on one batch it cannot go below ln(e + C - 1) - 1 = {floor:.3f}",
              "return logits: remove the softmax at the end of the model")
    elif in_unit and cols_one and not rows_one:
        f.add("fail", "softmax over the wrong dimension: columns of the output sum to 1, rows do not",
              "softmax over dim=1 (classes), or better return logits")
    elif in_unit:
        f.add("warn", "all outputs are in [0, 1] (sigmoid probabilities?) for a logits loss",
              "return logits: remove the final sigmoid")
    elif signatures.nll_of_logits(loss_fn, out, y):
        f.add("fail", "raw logits reach an NLL loss that expects log-probabilities",
              "F.cross_entropy(logits, y), or F.nll_loss(F.log_softmax(logits, 1), y)")
    else:
        f.add("pass", f"logits in [{float(out.min()):.2f}, {float(out.max()):.2f}], rows are not probabilities")
