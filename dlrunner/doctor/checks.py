"""The static and one-step checks: data, model, loss at init, loss inputs, train/eval mode,
gradient flow, numerics, memory and logging. Thresholds from Karpathy (2019), Full Stack Deep
Learning, AutoTrainer (ICSE 2021) and DeepDiagnosis (ICSE 2022); each item says what it measured."""
from __future__ import annotations

import gc
import hashlib
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from dlrunner import plots
from dlrunner.doctor import activations, nan, signatures
from dlrunner.doctor.core import Exam, Finding, leaf_modules
from dlrunner.loop import evaluate

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PROB_LAYERS = (nn.Softmax, nn.Sigmoid, nn.Softmax2d)


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (per-feature) mean and raw std; unlike data.core.norm_stats, a constant channel keeps std 0."""
    x = x.float()
    dims = (0,) if x.dim() == 2 else tuple(d for d in range(x.dim()) if d != 1)
    return x.mean(dims), x.std(dims)


def _hashes(x: torch.Tensor) -> list[str]:
    x = x.detach().float().cpu().contiguous()
    return [hashlib.blake2b(row.numpy().tobytes(), digest_size=12).hexdigest() for row in x]


def data_look(ex: Exam, run_dir: Path) -> Finding:
    f = Finding("data", "Data look")
    d = ex.job.data
    sizes = d.sizes()
    f.details["sizes"] = sizes
    f.add("pass", f"splits train {sizes['train']} / val {sizes['val']} / test {sizes['test']}")
    if sizes["val"] < 20:
        f.add("warn", f"val has {sizes['val']} samples: accuracy moves in steps of {100 / max(sizes['val'], 1):.1f} "
                      "points and its noise hides real changes", "raise data.val_fraction or use more data")
    x, y = ex.x, ex.y
    f.details |= {"batch_shape": list(x.shape), "dtype": str(x.dtype), "in_shape": list(d.in_shape)}
    plots.samples(x, y, d.class_names, d.modality, run_dir / "samples.png")
    if not x.is_floating_point():
        f.add("fail", f"inputs reach the net as {x.dtype} (max {int(x.max())})",
              "convert to float and scale (e.g. /255) then normalize; see samples.png")
        return f
    xs, ys = ex.sample(ex.job.train)
    xv, yv = ex.sample(ex.job.val)
    finite = torch.isfinite(xs)
    if not finite.all():
        f.add("fail", f"{int((~finite).sum())} NaN/Inf values in {len(xs)} training inputs",
              "clean or impute the data before training")
        xs = torch.nan_to_num(xs)
    same = signatures.constant_inputs(xs)
    if same:
        f.add("fail", same, "check the data loading: every index returns the same sample (or a constant fill)")
    mean, std = _channel_stats(xs)
    lo, hi = float(xs.min()), float(xs.max())
    f.details |= {"range": [lo, hi], "mean": [round(float(v), 4) for v in mean[:16]],
                  "std": [round(float(v), 4) for v in std[:16]]}
    unit = "feature" if xs.dim() == 2 else "channel"
    f.add("pass", f"inputs {tuple(x.shape[1:])} {str(x.dtype).replace('torch.', '')}, range [{lo:.2f}, {hi:.2f}], "
                  f"per-{unit} mean {float(mean.abs().max()):.2f} max |.|, std {float(std.min()):.2f}..{float(std.max()):.2f}")
    if hi > 20 and lo >= 0 and float((xs == xs.round()).float().mean()) > 0.9:
        f.add("fail", f"inputs look like raw 0-{hi:.0f} integers (range [{lo:.0f}, {hi:.0f}], mostly whole numbers)",
              "scale to [0, 1] (/255) and normalize (data.normalize=true)")
    elif float(mean.abs().max()) > 1 or float(std.max()) > 10 or float(std.min()) < 0.1:
        bad = int(((mean.abs() > 1) | (std > 10) | (std < 0.1)).sum())
        const = int((std < 1e-6).sum())
        f.add("warn" if const < len(std) else "fail",
              f"{bad}/{len(std)} {unit}s are not normalized (|mean| > 1 or std outside [0.1, 10])"
              + (f"; {const} constant" if const else ""),
              "normalize with the training split's per-channel mean/std (data.normalize=true); drop constant features")
    f.details["x_sample"] = len(xs)
    # labels
    k = ex.num_classes
    if ys.is_floating_point() or ys.dim() != 1:
        f.add("fail", f"labels are {ys.dtype} of shape {tuple(ys.shape[1:]) or '()'} per sample",
              "cross-entropy wants int64 class ids 0..K-1 of shape (N,)")
        return f
    if int(ys.min()) < 0 or int(ys.max()) >= k:
        f.add("fail", f"labels span [{int(ys.min())}, {int(ys.max())}] but there are {k} classes",
              "relabel to 0..K-1 (data.classes relabels automatically)")
        return f
    hist = torch.bincount(ys.cpu(), minlength=k)
    f.details["class_histogram"] = hist.tolist()
    majority = int(hist.argmax())
    maj_acc = float((yv.cpu() == majority).float().mean())
    ex.majority_acc = maj_acc
    f.details["majority_val_acc"] = maj_acc
    missing = [d.class_names[i] for i in range(k) if hist[i] == 0]
    if missing:
        f.add("warn", f"classes never seen in training: {', '.join(missing[:5])}", "check data.classes and the split")
    ratio = float(hist.max()) / max(float(hist[hist > 0].min()), 1.0)
    f.add("warn" if ratio > 10 else "pass",
          f"{k} classes, {int(hist.min())}..{int(hist.max())} per class (imbalance {ratio:.1f}x); "
          f"majority-class accuracy {100 * maj_acc:.1f}%",
          "imbalance > 10x: weight the loss or resample; judge accuracy against the majority baseline"
          if ratio > 10 else "")
    # leakage: identical inputs in train and val
    train_h = set(_hashes(xs))
    dup = sum(h in train_h for h in _hashes(xv))
    f.details["val_in_train"] = dup
    frac = dup / max(len(xv), 1)
    f.add("warn" if frac > 0.01 else "pass",
          f"{dup}/{len(xv)} val inputs also appear in train ({100 * frac:.1f}%)",
          "deduplicate before splitting: val accuracy on memorized samples overstates generalization"
          if frac > 0.01 else "")
    return f


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """One eval forward with hooks on every leaf: execution order, output shapes, parameters."""
    rows = []

    def hook(name):
        def fn(mod, inp, out):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            rows.append({"name": name, "type": type(mod).__name__, "out": shape,
                         "params": sum(p.numel() for p in mod.parameters(recurse=False)), "module": mod})
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaf_modules(model)]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, rows


def model_look(ex: Exam) -> Finding:
    f = Finding("model", "Model look")
    model = ex.model
    was = model.training
    model.eval()
    with ex.job.precision.autocast():
        out, rows = _trace(model, ex.x[:8])
    model.train(was)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    f.details["layers"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items() if k != "module"}
                           for r in rows]
    f.details["params"], f.details["trainable"] = n_params, n_train
    f.add("pass", f"{type(ex.job.base_model).__name__}: {len(rows)} layers, {n_params:,} parameters "
                  f"({n_train:,} trainable), output {tuple(out.shape)}")
    k = ex.num_classes
    if out.dim() != 2 or out.shape[1] != k:
        f.add("fail", f"the model outputs {tuple(out.shape)} for a batch of 8, the data has {k} classes",
              f"end the model with a layer of {k} outputs, shape (B, {k})")
    if rows and isinstance(rows[-1]["module"], PROB_LAYERS):
        f.add("fail", f"the last layer is {rows[-1]['type']} (`{rows[-1]['name']}`) in front of a logits loss",
              "remove it: cross-entropy applies log-softmax itself; apply softmax only when predicting")
    for a, b in zip(rows, rows[1:]):
        m = a["module"]
        if isinstance(b["module"], NORMS) and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) \
                and m.bias is not None:
            f.add("warn", f"`{a['name']}` has a bias right before BatchNorm `{b['name']}` (it is cancelled)",
                  "bias=False on layers followed by BatchNorm")
            break
    ignored = signatures.ignores_input(model, ex.x[:8], ex.job.precision.autocast)
    if ignored:
        f.add("fail", ignored, "check forward: its output must be computed from its argument x")
    if n_train == 0:
        f.add("fail", "no trainable parameter", "unfreeze the model (requires_grad=True)")
    return f


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
    k = ex.num_classes
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


def train_eval_mode(ex: Exam) -> Finding:
    f = Finding("mode", "Train/eval mode")
    ex.reset()
    model, x = ex.model, ex.x
    dependent = [n for n, m in model.named_modules()  # dropout with p=0 behaves the same in both modes
                 if (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
                 or isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    with torch.no_grad(), ex.job.precision.autocast():
        a, b = model(x).float(), model(x).float()
    moved = [n for n, t in model.named_buffers() if n in buffers and not torch.equal(t, buffers[n])]
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        f.add("fail", f"two eval-mode forwards of the same batch differ (max |diff| {float((a - b).abs().max()):.3g})",
              "dropout or another random layer runs in eval mode: use nn.Dropout modules, or F.dropout(x, "
              "training=self.training)")
    else:
        f.add("pass", "eval mode is deterministic")
    if moved:
        f.add("fail", f"buffers changed during evaluation: {', '.join(moved[:4])}",
              "BatchNorm running statistics must not move in eval mode: call model.eval() before evaluating")
    # in training mode every mode-dependent layer must be training
    model.train()
    stuck = [n for n, m in model.named_modules() if n in dependent and not m.training]
    seen: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen.append(n) if not mod.training else None)
             for n, m in model.named_modules() if n in dependent]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), ex.job.precision.autocast():
            t = model(x).float()
    finally:
        for h in hooks:
            h.remove()
    ex.reset()
    stuck = sorted(set(stuck) | set(seen))
    if stuck:
        f.add("fail", f"after model.train(), {len(stuck)} dropout/BatchNorm layers run in eval mode "
                      f"({', '.join(stuck[:4])}): the model is stuck in eval mode",
              "do not override train() or call .eval() inside forward; dropout and BatchNorm then never train")
    elif dependent and torch.allclose(t, a, atol=1e-6):
        f.add("warn", "training-mode and eval-mode outputs are identical although the model has "
                      f"{len(dependent)} dropout/BatchNorm layers", "check that model.train() reaches them")
    elif dependent:
        f.add("pass", f"{len(dependent)} dropout/BatchNorm layers switch with model.train()/eval()")
    f.details["mode_dependent_layers"] = dependent
    return f


def _group(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def gradient_flow(ex: Exam) -> Finding:
    f = Finding("gradients", "Gradient flow")
    ex.reset()
    model, x, y = ex.model, ex.x, ex.y
    params = dict(model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    frozen = [n for n, p in params.items() if not p.requires_grad]
    opt = ex.optimizer()
    in_opt = {id(p) for g in ex.job.optimizer.param_groups for p in g["params"]}
    # activations (modules and torch functions alike): dead ReLUs, saturated tanh/sigmoid on >= 256 samples
    xs, _ = ex.sample(ex.job.train, 512)
    sites = activations.observe(model, xs, ex.job.precision.autocast)
    # one backward
    with ex.job.precision.autocast():
        loss = ex.job.loss_fn(model(x).float(), y)
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
    f.details |= {"grad_norms": norms, "update_ratio": ratio}
    cuts = signatures.gradient_cuts(model, x, ex.job.precision.autocast) if none else []
    ex.reset()
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
    not_in = [n for n, p in trainable.items() if id(p) not in in_opt]
    if not_in:
        f.add("fail", f"{len(not_in)} trainable tensors are not in the optimizer: {', '.join(not_in[:4])}",
              "build the optimizer after the model is complete, from model.parameters()")
    if unchanged and not not_in:
        f.add("fail", f"{len(unchanged)} tensors with a gradient did not change after a step: {', '.join(unchanged[:3])}",
              "check the optimizer's learning rate for their parameter group")
    if frozen:
        reason = getattr(ex.job.base_model, "dlrun_pretrained", None) or any(
            t.name in ("precompute", "gradual_unfreezing") for t in ex.job.tricks)
        status = "pass" if reason else "fail"
        f.add(status, f"{len(frozen)} tensors are frozen (requires_grad=False): {', '.join(frozen[:4])}"
                      + (" (as the job intends)" if reason else " in a model trained from scratch: they keep their random init"),
              "" if reason else "unfreeze them (requires_grad=True) or start from trained weights")
    if norms:
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
    if ratio:
        vals = sorted(ratio.values())
        med = vals[len(vals) // 2]
        f.details["update_ratio_median"] = med
        hi = {k: v for k, v in ratio.items() if v > 1e-1}
        lo = {k: v for k, v in ratio.items() if v < 1e-5}
        ev = f"update/weight ratio after one step: median {med:.1e} (healthy ~1e-3)"
        if hi:
            f.add("warn", ev + f"; {len(hi)} layers above 1e-1 (max {max(hi.values()):.1e}): the LR is too high",
                  f"lower optim.lr (now {ex.lr:.1e}); `dlrun mode=lr_find` suggests one")
        elif lo and len(lo) > len(ratio) / 2:
            f.add("warn", ev + f"; {len(lo)} layers below 1e-5: the LR is too low",
                  f"raise optim.lr (now {ex.lr:.1e}); `dlrun mode=lr_find` suggests one")
        else:
            f.add("pass", ev)
    f.details["activations"] = {n: site.to_dict() for n, site in sites.items()}
    for evidence, fix in activations.problems(sites, len(xs)):
        f.add("warn", evidence, fix)
    return f


def numerics(ex: Exam) -> Finding:
    f = Finding("numerics", "Numerics")
    ex.reset()
    model, x, y = ex.model, ex.x, ex.y
    prec = ex.job.precision
    model.train()
    with torch.random.fork_rng(devices=[]):
        rep = nan.locate(model, x, y, ex.job.loss_fn, prec.autocast)
    f.details["nonfinite"] = rep.to_dict()
    if rep.origin is not None:
        f.add("fail", "non-finite value on the first batch: " + "; ".join(rep.lines()[:-1]), rep.fix)
    else:
        f.add("pass", f"every module output is finite on the first batch ({prec.name})")
    # dtype trouble under reduced precision: values near fp16's limit, fp16 weights with an optimizer
    big = []

    def hook(name):
        def fn(mod, inp, out):
            if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
                big.append((float(out.detach().abs().max()), name, out.dtype))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaf_modules(model)]
    try:
        with torch.no_grad(), prec.autocast():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    ex.reset()
    peak = max(big) if big else (0.0, "", None)
    f.details["max_activation"] = {"value": peak[0], "module": peak[1]}
    fp16 = prec.dtype == "fp16" or any(p.dtype == torch.float16 for p in model.parameters())
    if fp16 and peak[0] > 1e4:
        f.add("warn", f"activations reach {peak[0]:.3g} in `{peak[1]}`, near fp16's limit 65504",
              "use precision=bf16-mixed, or normalize/scale down the activations")
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    f.details["param_dtypes"] = dtypes
    if prec.dtype:
        f.add("pass", f"autocast {prec.dtype}: output {str(out.dtype).replace('torch.', '')}, loss computed in "
                      f"float32, weights {'/'.join(dtypes)}"
              + (", fp16 with a GradScaler" if prec.scaler else ""))
    return f


def memory(ex: Exam) -> Finding:
    f = Finding("memory", "Memory")
    if ex.device.type != "cuda":
        f.add("skip", f"on {ex.device.type}: device memory is measured on CUDA only")
        return f
    ex.reset()
    opt = ex.optimizer()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ex.step(opt, ex.x, ex.y)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    per_sample = peak / len(ex.y)
    free, total = torch.cuda.mem_get_info()
    fits = int(max(1, (free * 0.8) // max(per_sample, 1)))
    f.details |= {"peak_bytes_per_batch": peak, "batch": len(ex.y), "free": free, "total": total,
                  "estimated_max_batch": fits}
    f.add("pass", f"peak {peak / 2**20:.1f} MiB for a batch of {len(ex.y)}; ~{fits} samples would fit "
                  f"in {free / 2**30:.1f} GiB free")
    allocated = []
    for _ in range(12):
        ex.step(opt, ex.x, ex.y)
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    growth = allocated[-1] - allocated[2]
    rising = all(b >= a for a, b in zip(allocated[2:], allocated[3:])) and growth > 0
    f.details["allocated_per_step"] = allocated
    if rising:
        f.add("warn", f"allocated memory rises every step ({growth / 2**20:.2f} MiB over 10 steps): a leak",
              "do not keep tensors that hold the graph (accumulate loss.item(), not loss)")
    del opt
    gc.collect()
    torch.cuda.empty_cache()
    ex.reset()
    return f


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
