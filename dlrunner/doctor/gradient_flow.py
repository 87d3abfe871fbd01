"""The gradient-flow check: one backward and one step from the initial weights. Tensors without a
gradient (and where forward cuts it), all-zero gradients, parameters left out of the optimizer or
unchanged by a step, frozen tensors, the first/last layer gradient ratio, the update/weight ratio,
and dead or saturated activations from modules and torch functions alike."""
from __future__ import annotations

import math

import torch

from dlrunner.doctor import activations, signatures
from dlrunner.doctor.core import Exam, Finding


def _group(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def gradient_flow(ex: Exam) -> Finding:
    f = Finding("gradients", "Gradient flow")
    ex.reset()
    model = ex.model
    params = dict(model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    frozen = [n for n, p in params.items() if not p.requires_grad]
    # activations (modules and torch functions alike): dead ReLUs, saturated tanh/sigmoid on >= 256 samples
    xs, _ = ex.sample(ex.job.train, 512)
    sites = activations.observe(model, xs, ex.job.precision.autocast)
    step = _one_step(ex, trainable)
    f.details |= {"grad_norms": step["norms"], "update_ratio": step["ratio"]}
    cuts = signatures.gradient_cuts(model, ex.x, ex.job.precision.autocast) if step["none"] else []
    ex.reset()
    _connectivity(f, ex, trainable, step, cuts)
    if frozen:
        reason = getattr(ex.job.base_model, "dlrun_pretrained", None) or any(
            t.name in ("precompute", "gradual_unfreezing") for t in ex.job.tricks)
        status = "pass" if reason else "fail"
        f.add(status, f"{len(frozen)} tensors are frozen (requires_grad=False): {', '.join(frozen[:4])}"
                      + (" (as the job intends)" if reason else " in a model trained from scratch: they keep their random init"),
              "" if reason else "unfreeze them (requires_grad=True) or start from trained weights")
    _norms(f, step["norms"])
    _ratios(f, step["ratio"], ex.lr)
    f.details["activations"] = {n: site.to_dict() for n, site in sites.items()}
    for evidence, fix in activations.problems(sites, len(xs)):
        f.add("warn", evidence, fix)
    return f


def _one_step(ex: Exam, trainable: dict[str, torch.Tensor]) -> dict:
    """One backward and one optimizer step on the first batch: which tensors get no or an all-zero
    gradient, the gradient norm and update/weight ratio per layer, what a step left unchanged."""
    opt = ex.optimizer()
    with ex.job.precision.autocast():
        loss = ex.job.loss_fn(ex.model(ex.x).float(), ex.y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    none = [n for n, p in trainable.items() if p.grad is None]
    zero = [n for n, p in trainable.items() if p.grad is not None and not bool(p.grad.abs().sum() > 0)]
    norms: dict[str, float] = {}
    for n, p in trainable.items():
        if p.grad is not None:
            norms[_group(n)] = math.hypot(norms.get(_group(n), 0.0), float(p.grad.norm()))
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt.step()
    ratio = {}
    for n, p in trainable.items():
        w = float(before[n].norm())
        if p.grad is not None and w > 0 and p.dim() > 1:
            ratio[_group(n)] = float((p.detach() - before[n]).norm()) / w
    unchanged = [n for n, p in trainable.items() if p.grad is not None and bool(p.grad.abs().sum() > 0)
                 and torch.equal(p.detach(), before[n])]
    ex.reset()
    return {"none": none, "zero": zero, "norms": norms, "ratio": ratio, "unchanged": unchanged}


def _connectivity(f: Finding, ex: Exam, trainable: dict[str, torch.Tensor], step: dict, cuts: list[str]) -> None:
    """Gradients that do not reach a tensor, or reach it without effect."""
    none, zero, unchanged = step["none"], step["zero"], step["unchanged"]
    if cuts:
        f.add("fail", f"forward cuts the gradient at {', '.join(f'`{c}`' for c in cuts[:3])}",
              "use the tensor itself: .data and .detach() stop the gradient to everything before them")
    if none:
        f.add("fail", f"{len(none)} trainable tensors get no gradient: {', '.join(none[:4])}"
                      f"{' ...' if len(none) > 4 else ''} (not connected to the loss: a detach(), .data, "
                      "a numpy round trip or an unused layer)", "remove the detach / use the layer in forward")
    if zero:
        f.add("fail", f"{len(zero)} tensors get an all-zero gradient: {', '.join(zero[:4])}",
              "a dead path: check for multiplication by zero, a clamp or a ReLU that is always off")
    in_opt = {id(p) for g in ex.job.optimizer.param_groups for p in g["params"]}
    not_in = [n for n, p in trainable.items() if id(p) not in in_opt]
    if not_in:
        f.add("fail", f"{len(not_in)} trainable tensors are not in the optimizer: {', '.join(not_in[:4])}",
              "build the optimizer after the model is complete, from model.parameters()")
    if unchanged and not not_in:
        f.add("fail", f"{len(unchanged)} tensors with a gradient did not change after a step: {', '.join(unchanged[:3])}",
              "check the optimizer's learning rate for their parameter group")


def _norms(f: Finding, norms: dict[str, float]) -> None:
    """The first/last layer gradient norm ratio: exploding or vanishing at init."""
    if not norms:
        return
    names = list(norms)
    first, last = norms[names[0]], norms[names[-1]]
    r = first / last if last > 0 else float("inf")
    f.details["first_last_ratio"] = r
    ev = f"gradient norm first/last layer {r:.2g} ({names[0]} {first:.2g}, {names[-1]} {last:.2g})"
    if not math.isfinite(r) or r >= 70 or not all(math.isfinite(v) for v in norms.values()):
        f.add("warn", ev + ": exploding", "lower the LR, add normalization or trick=grad_clip")
    elif r <= 1e-3:
        f.add("warn", ev + ": vanishing", "use ReLU-family activations, He init, residual connections or BatchNorm")
    else:
        f.add("pass", ev)


def _ratios(f: Finding, ratio: dict[str, float], lr: float) -> None:
    """The update/weight ratio of one step (healthy ~1e-3)."""
    if not ratio:
        return
    vals = sorted(ratio.values())
    med = vals[len(vals) // 2]
    f.details["update_ratio_median"] = med
    hi = {k: v for k, v in ratio.items() if v > 1e-1}
    lo = {k: v for k, v in ratio.items() if v < 1e-5}
    ev = f"update/weight ratio after one step: median {med:.1e} (healthy ~1e-3)"
    if hi:
        f.add("warn", ev + f"; {len(hi)} layers above 1e-1 (max {max(hi.values()):.1e}): the LR is too high",
              f"lower optim.lr (now {lr:.1e}); `dlrun mode=lr_find` suggests one")
    elif lo and len(lo) > len(ratio) / 2:
        f.add("warn", ev + f"; {len(lo)} layers below 1e-5: the LR is too low",
              f"raise optim.lr (now {lr:.1e}); `dlrun mode=lr_find` suggests one")
    else:
        f.add("pass", ev)
