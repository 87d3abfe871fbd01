"""The model-based half of the importance sweep, on Optuna used as a library: proposals from its TPE
sampler (multivariate, conditional keys grouped, a constant liar for trials proposed together),
warm-started with every earlier trial of the sweep, and importance measured over all trials
(fANOVA: a random forest's variance decomposition). Optuna is imported here alone, on first use:
training never needs it."""
from __future__ import annotations

from typing import Any, Callable

from dlrunner.errors import DlrunError
from dlrunner.sweep import Param, fmt

# (values of every key the trial's config has, as recorded; its metric, or None when it failed)
History = list[tuple[dict[str, str], "float | None"]]


def _optuna():
    try:
        import optuna
    except ImportError as e:  # a dependency, but a trimmed environment may lack it
        raise DlrunError("sweep=importance needs optuna (pip install optuna)") from e
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's `group`
    return optuna


def distribution(p: Param):
    """Optuna's distribution for one searched key (choices as the config writes them)."""
    d = _optuna().distributions
    if p.kind == "choice":
        return d.CategoricalDistribution(list(p.choices))
    if p.integer:
        return d.IntDistribution(int(p.low), int(p.high), log=p.kind == "log")
    return d.FloatDistribution(float(p.low), float(p.high), log=p.kind == "log")


def internal(p: Param, text: str) -> Any:
    """A recorded value (trials.csv text) as the distribution holds it; a number outside a range
    counts as its nearest bound (weight_decay 0, the config's own value, as the low end)."""
    if p.kind == "choice":
        for c in p.choices:
            if fmt(c) == text or str(c) == text:
                return c
        raise KeyError(text)
    v = float(text)
    v = min(max(v, p.low), p.high)
    return int(round(v)) if p.integer else v


def _study(space: dict[str, Param], history: History, lower: bool, sampler: Any):
    optuna = _optuna()
    study = optuna.create_study(direction="minimize" if lower else "maximize", sampler=sampler)
    for values, metric in history:
        params, dists = {}, {}
        for k, text in values.items():
            if k not in space:
                continue
            try:
                params[k] = internal(space[k], text)
            except (KeyError, ValueError):  # a value outside the choices (set by hand): not modelled
                continue
            dists[k] = distribution(space[k])
        state = optuna.trial.TrialState.COMPLETE if metric is not None else optuna.trial.TrialState.FAIL
        study.add_trial(optuna.trial.create_trial(state=state, value=metric, params=params, distributions=dists))
    return study


def propose(space: dict[str, Param], history: History, keys: list[str], exists: Callable[[dict, str], bool],
            n: int, seed: int, lower: bool, startup: int = 0) -> list[dict[str, Any]]:
    """n points over `keys` (groups first, so that a group's own keys are asked only when the chosen
    group has them: `exists(point so far, key)`), from TPE fitted on `history`. Points are asked
    together (the earlier ones pending, so the constant liar spreads them) and never repeat a point
    already in the history or the batch."""
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                         n_startup_trials=startup)
    study = _study(space, history, lower, sampler)
    known = {_sig(v, keys): m for v, m in history}
    ordered = sorted(keys, key=lambda k: "." in k)  # config groups (no dot) before the keys they hold
    out: list[dict[str, Any]] = []
    for _ in range(n):
        for _attempt in range(20):
            trial = study.ask()
            point: dict[str, Any] = {}
            for k in ordered:
                if exists(point, k):
                    point[k] = _suggest(trial, space[k])
            sig = _sig({k: fmt(v) for k, v in point.items()}, keys)
            if sig not in known:
                break
            # a repeat: tell TPE its known result (or a failure) and ask again
            seen = known[sig]
            if seen is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, seen)
        known[sig] = None
        out.append(point)
    return out


def _suggest(trial: Any, p: Param) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(p.key, list(p.choices))
    if p.integer:
        return trial.suggest_int(p.key, int(p.low), int(p.high), log=p.kind == "log")
    return trial.suggest_float(p.key, float(p.low), float(p.high), log=p.kind == "log")


def _sig(values: dict[str, str], keys: list[str]) -> tuple:
    return tuple(sorted((k, values[k]) for k in keys if k in values))


def importance(space: dict[str, Param], history: History, lower: bool, seed: int = 0) -> dict[str, float]:
    """Each key's share of the metric's variance over all finished trials (fANOVA, normalised to
    sum 1), most important first; keys present in every trial only (a group's own keys, such as
    optim.momentum, are not). Empty with fewer than 3 finished trials."""
    optuna = _optuna()
    done = [(v, m) for v, m in history if m is not None]
    if len(done) < 3:
        return {}
    study = _study(space, done, lower, optuna.samplers.RandomSampler(seed=seed))
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    except (RuntimeError, ValueError):  # no key varied over the trials
        return {}
    return {k: float(v) for k, v in imp.items()}
