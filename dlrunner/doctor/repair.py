"""`doctor.repair=true`: try the cure (AutoTrainer, ICSE 2021, repairs and reports the accuracy
before and after). For a cause that a config change can remedy (learning rate too high or too low,
inputs not normalized, a saturating init, too much dropout, a batch too small for BatchNorm) the
failing experiment is re-run on a job rebuilt with the remedy applied, and the report says whether
the symptom is gone and which override to use. Code-level causes keep pointing at the code."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dlrunner.doctor.core import Exam
from dlrunner.doctor.training import fit_batch

LR_FACTORS = (10.0, 100.0, 1e3, 1e4, 1e5)  # how far the LR search goes in the remedy's direction


@dataclass
class Knobs:
    """The configured values a remedy starts from (None: the job has no such knob)."""

    normalize: bool | None = None  # data.normalize
    init: str | None = None  # model.init: the weight init's name
    dropout: float | None = None  # model.dropout, 0-1
    batch_size: int | None = None  # data.batch_size (None: auto or not a number)


@dataclass
class Repair:
    """One attempted cure: the cause, the override, what the re-run showed."""

    cause: str
    override: list[str] = field(default_factory=list)
    cured: bool | None = None  # None: not a config fix (code-level), nothing re-run
    evidence: str = ""


def attempt(ex: Exam, knobs: Knobs, rebuild: Callable[[list[str]], Any], run_dir: Path) -> list[Repair]:
    """The remedies for what the examination found, each re-run on the job `rebuild(overrides)`
    builds with the remedy's overrides applied."""
    out = []
    for cause, override, symptom in _remedies(ex, knobs):
        if not override:
            out.append(Repair(cause, evidence=symptom))
            continue
        cured, evidence = _rerun(ex, rebuild, run_dir, override, symptom)
        ex.reset()
        out.append(Repair(cause, override, cured, evidence))
    return out


def _failing(ex: Exam, key: str, word: str = "") -> bool:
    f = ex.findings.get(key)
    return f is not None and any(i.status in ("warn", "fail") and word in i.evidence for i in f.items)


def _remedies(ex: Exam, knobs: Knobs) -> list[tuple[str, list[str], str]]:
    """(cause, overrides, the symptom to re-check) for each remedy that applies; no overrides for a
    cause only the code can fix."""
    todo = []
    if _failing(ex, "data", "not normalized") or _failing(ex, "data", "raw 0-"):
        if knobs.normalize is False:
            todo.append(("inputs not normalized", ["data.normalize=true"], "data"))
        else:
            todo.append(("inputs not normalized", [], "the data builder ignores data.normalize: scale and normalize "
                                                      "the inputs in your data code"))
    elif _failing(ex, "gradients", "saturate"):
        if knobs.init is not None and knobs.init != "glorot":
            todo.append(("a saturating init", ["model.init=glorot"], "gradients"))
        else:
            todo.append(("a saturating init", [], "initialize the layers before tanh/sigmoid smaller, in the model code"))
    causes = [c["cause"] for c in ex.causes if c["evidence"]]
    overfit = ex.findings.get("overfit")
    if overfit is not None and overfit.details.get("shape") not in (None, "converges"):
        lr = _lr_remedy(ex, causes)
        if lr:
            todo.append(lr)
        if "too much regularization" in causes and knobs.dropout is not None and knobs.dropout >= 0.3:
            todo.append(("too much dropout", [f"model.dropout={knobs.dropout / 4:g}"], "overfit"))
        if _small_batchnorm(ex) and knobs.batch_size is not None and knobs.batch_size < 16:
            todo.append(("batch too small for BatchNorm", ["data.batch_size=32"], "overfit"))
    if _failing(ex, "capacity", "batch too small for BatchNorm") and not any(t[0].startswith("batch too") for t in todo):
        todo.append(("batch too small for BatchNorm", ["data.batch_size=32"], "capacity"))
    code = {"flipped loss or gradient sign", "incorrect inputs to the loss function", "softmax over the wrong dimension",
            "gradients not passing through the model", "numerical instability (log/exp/div)",
            "the model ignores its input", "the inputs carry no signal", "corrupted labels"}
    for c in causes:
        if c in code and not any(c == t[0] for t in todo):
            todo.append((c, [], "a code-level cause: see the fix of the check that found it"))
    return todo


def _lr_remedy(ex: Exam, causes: list[str]) -> tuple[str, list[str], str] | None:
    """Search the LR in the direction the evidence points, on the exam's own model; the first that
    fits the batch becomes the override (re-checked on a rebuilt job)."""
    diag = ex.findings["overfit"].details.get("diagnosis", "")
    high = "too high" in diag or (not diag.endswith("too low") and "learning rate too high" in causes[:2])
    low = "too low" in diag or (not high and "learning rate too low" in causes[:2])
    if not (high or low):
        return None
    steps = int(ex.opts.get("overfit_steps", 200))
    for factor in LR_FACTORS:
        run = fit_batch(ex, steps, 1 / factor if high else factor, extend=1)
        if run["shape"] == "converges":
            return ("learning rate too " + ("high" if high else "low"), [f"optim.lr={run['lr']:.3g}"], "overfit")
    return ("learning rate too " + ("high" if high else "low"), [], "no learning rate up to 1e5x away fits one "
            "batch: not the learning rate alone")


def _small_batchnorm(ex: Exam) -> bool:
    from torch import nn

    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ex.model.modules())


def _rerun(ex: Exam, rebuild: Callable[[list[str]], Any], run_dir: Path, override: list[str],
           symptom: str) -> tuple[bool, str]:
    """Rebuild the job with the override and re-run the check that showed the symptom."""
    from dlrunner.doctor import CHECKS, examine

    job = rebuild(override)
    keep = {symptom, "overfit"} if symptom in ("data", "gradients") else {symptom}
    opts = {**ex.opts, "skip": [k for k in CHECKS if k not in keep], "repair": False}
    (run_dir / "repair").mkdir(exist_ok=True)
    again = examine(job, run_dir / "repair", opts)
    f = again.findings[symptom]
    o = again.findings.get("overfit")
    fits = o is not None and o.details.get("shape") == "converges"
    gone = {"data": not (_failing(again, "data", "not normalized") or _failing(again, "data", "raw 0-")),
            "gradients": not _failing(again, "gradients", "saturate"), "overfit": fits,
            "capacity": not _failing(again, "capacity")}[symptom]
    was_failing = ex.findings.get("overfit") is not None and ex.findings["overfit"].status == "fail"
    cured = gone and (fits or not was_failing)
    if o is not None:
        r = o.details["runs"][0]
        curve = f"single-batch loss {r['initial']:.3g} -> {r['final']:.3g} at lr {r['lr']:.1e} ({r['shape']})"
    else:
        curve = ""
    ev = f"with {' '.join(override)}: " + (f"{f.title.lower()} {f.status}" if symptom != "overfit" else "") \
        + ("; " if symptom != "overfit" and curve else "") + curve
    if symptom == "capacity":
        ev = f"with {' '.join(override)}: capacity {f.status}: {f.summary}"
    if cured and symptom == "overfit":
        ev = f"single-batch loss now converges at lr {r['lr']:.1e} ({r['initial']:.3g} -> {r['final']:.3g})"
    return cured, ev


def lines(repairs: list[Repair]) -> list[str]:
    """One line per attempted cure, for the console and doctor.md."""
    out = []
    for r in repairs:
        if r.cured is None:
            out.append(f"{r.cause}: not a config fix; {r.evidence}")
        elif r.cured:
            out.append(f"{r.cause}: cured: {r.evidence}; use `{' '.join(r.override)}`")
        else:
            out.append(f"{r.cause}: not cured by `{' '.join(r.override)}`: {r.evidence}")
    return out
