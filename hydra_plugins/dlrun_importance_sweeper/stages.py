"""The importance sweep's plan, stage by stage (mixed into the Sweeper, which runs the trials):

1. baseline: the config as given, one trial;
2. tier1: quasi-random (Sobol) points over the first tier's keys, the others at the config's values:
   the guides' prior on where the first trials go;
3. tier2, tier3, ...: TPE over the keys of every tier so far (earlier tiers are revisited, never
   frozen), warm-started with all earlier trials, asked `sweep.batch` at a time; a stage whose new
   keys turn out to carry little of the measured variance ends early (`sweep.settle`);
4. refine: TPE over the keys that measured importance (fANOVA over all trials) says carry
   `sweep.refine_mass` of the variance, the rest fixed at the incumbent's values;
5. confirm: the `sweep.confirm` best points re-run with the second seed; the pick is the best
   2-seed mean.
The stages' shares of the search budget are `sweep.shares`, the prior; a stage that uses fewer
trials (its keys measured unimportant, or its grid exhausted) passes them on.

`sweep.time_budget` bounds the whole sweep, continuations and confirmation included: a batch, a
stage's continuations or the confirmation start only when their estimated time (from the walls of
the trials so far) fits before the deadline. With `sweep.budget=auto` the shares are shares of the
time rather than of a trial count: each stage gets its share of the time left, and the trials are as
many as fit."""
from __future__ import annotations

import math
import time
from typing import Any

from omegaconf import OmegaConf

from dlrunner import sweep as sw
from dlrunner import sweep_tpe as tpe
from dlrunner.errors import DlrunError
from hydra_plugins.dlrun_importance_sweeper.clock import Clock
from hydra_plugins.dlrun_importance_sweeper.confirm import Confirm
from hydra_plugins.dlrun_importance_sweeper.settings import halving, measured_order, parse_budget, parse_duration

_ABSENT = object()


class Stages(Clock, Confirm):
    """The search plan; the Sweeper provides _trial, _run, _compose, _exists, _best, console, s, ..."""

    def _tiers(self) -> list[list[str]]:
        """`sweep.tiers`, or with `sweep.order=PATH` an earlier sweep's measured order cut into as
        many tiers of the same sizes (keys it did not measure go last)."""
        tiers = [list(t) for t in self.s["tiers"]]
        if self.s.get("order"):
            order = [k for k in measured_order(str(self.s["order"])) if k in self.space]
            rest = [k for t in tiers for k in t if k not in order]
            flat, cut = order + rest, []
            for t in tiers:
                cut.append(flat[: len(t)])
                flat = flat[len(t):]
            cut[-1] += flat
            tiers = cut
            self.console.print("tiers from the measured order of " + str(self.s["order"]) + ": "
                               + " | ".join(", ".join(t) for t in tiers))
        return tiers

    def _run_all(self) -> None:
        self.deadline = parse_duration(self.s.get("time_budget"))
        budget = parse_budget(self.s["budget"], int(self.config.get("epochs", 1)), timed=self.deadline is not None)
        self.timed, self.stage_end = budget is None, None  # budget=auto with a time budget: shares of the time
        budget = 10**6 if budget is None else budget
        self.tiers = self._tiers()
        unknown = [k for t in self.tiers for k in t if k not in self.space]
        if unknown:
            raise DlrunError(f"sweep.tiers name {unknown} but sweep.space/sweep.groups do not define them")
        shares = [float(x) for x in self.s["shares"]]
        if len(shares) != len(self.tiers) + 1:
            raise DlrunError(f"sweep.shares has {len(shares)} entries for {len(self.tiers)} tiers "
                             f"and the refinement ({len(self.tiers) + 1} needed)")
        confirm = self.n_confirm = int(self.s.get("confirm", 2)) if len(self.seeds) > 1 else 0
        if budget <= 1 + confirm:
            raise DlrunError(f"sweep.budget={budget} leaves no trial after the baseline and the "
                             f"{confirm} confirmation re-runs")
        self._promoted_share()  # a bad sweep.promote: one line before any trial
        self.t0 = time.perf_counter()
        batch = self._batch()
        method = str(self.s.get("method", "importance"))
        if method != "importance":  # the searches a user would otherwise run, for comparison
            self.inc = {"values": {}, "trials": []}
            self.params = self._absolute_space()
            every = list(self.params)
            n = budget - confirm
            if method == "random":
                self._slice(1.0)
                self._stage("random", every, n, every, n_fresh=10**9)  # every point quasi-random
            elif method == "tpe":
                self._slice(1.0)
                self._stage("tpe", every, n, [], n_fresh=0, startup=int(self.s.get("tpe_startup", 8)))
            else:
                raise DlrunError(f"sweep.method={method}: importance | random | tpe")
            return self._confirm(confirm)
        base = [self._trial("baseline", 0, self.seeds[0], {})]
        self._run(base)
        if not base[0].ok:
            raise DlrunError(f"the baseline (the config as given) failed, nothing to compare with: {base[0].error}")
        self.inc: dict[str, Any] = {"values": {}, "trials": base}
        self.stages.append({"name": "baseline", "keys": []})
        self._table("baseline", base)
        self.params = self._absolute_space()
        alloc = sw.split_budget(budget - 1 - confirm, shares)
        carry = 0
        for i in range(len(self.tiers)):
            keys = [k for t in self.tiers[: i + 1] for k in t]
            n = alloc[i] + carry
            # tier1: every point quasi-random (with the time shared out, 4 per key, then TPE); later: one batch over the new keys
            first = (4 * len(self.tiers[0]) if self.timed else 10**9) if i == 0 else batch
            self._slice(shares[i] / sum(shares[i:]))
            carry = n - self._stage(f"tier{i + 1}", keys, n, self.tiers[i], n_fresh=first)
        self._slice(1.0)
        self._stage("refine", self._important_keys(), alloc[-1] + carry, [], n_fresh=0)
        self._confirm(confirm)

    def _absolute_space(self) -> dict[str, sw.Param]:
        """The searched keys with `{times: ...}` ranges made absolute around the config's own value,
        and that value added to a key's choices (model.depth 4 on conv1d: the config's own point
        stays reachable and the model sees the baseline as it ran)."""
        out = {}
        cfg = self._compose({})
        for k, p in self.space.items():
            if k in self.fixed or not self._exists(k, [t for tier in self.tiers for t in tier]):
                continue
            p = self._absolute(p)
            own = self._default(k, cfg)
            if p.kind == "choice" and own is not None and not any(sw.fmt(c) == sw.fmt(own) for c in p.choices):
                p = sw.Param(p.key, "choice", choices=[*p.choices, own])
            if p.kind != "choice" or len(p.choices) > 1:
                out[k] = p
        return out

    def _default(self, key: str, cfg: Any) -> Any:
        if key in self.groups:
            return OmegaConf.select(self.config, f"hydra.runtime.choices.{key}", default=None)
        v = OmegaConf.select(cfg, key, default=None)
        return v if isinstance(v, (int, float, str, bool)) else None

    def _full_values(self, t: sw.Trial) -> dict[str, str]:
        """Every searched key the trial's config has, its own value or the config's (what TPE and the
        importance estimate see: a trial is a point in the whole space)."""
        groups = {k: v for k, v in t.values.items() if k in self.groups}
        cfg = self._compose(groups)
        out = {}
        for k in self.params:
            if k in t.values:
                out[k] = t.values[k]
            elif k in self.groups or OmegaConf.select(cfg, k, default=_ABSENT) is not _ABSENT:
                own = self._default(k, cfg)
                if own is not None:
                    out[k] = sw.fmt(own)
        return out

    def _history(self, searched: bool = False) -> tpe.History:
        """The searched trials TPE and the importance estimate learn from: with successive halving the
        short (rung) runs alone, so that every metric is on the same footing. `searched`: each trial's
        values of the keys the sweep set in it, not the config's values of the others (for TPE: a key
        no stage has searched yet is unknown, not known to be best at the config's value)."""
        short = self._halving()[0] > 1
        return [({k: v for k, v in t.values.items() if k in self.params} if searched else self._full_values(t),
                 t.metric if t.ok else None) for t in self.trials
                if t.seed == self.seeds[0] and t.round < 3 and (t.ok or t.run_dir) and (t.full != short)]

    def _finished(self) -> list[sw.Trial]:
        """Trials trained for the whole `epochs` with the searches' seed: what the pick is chosen from."""
        return [t for t in self.trials if t.seed == self.seeds[0] and t.round != 3 and t.full]

    def _halving(self) -> tuple[int, int]:
        """(k, rung epochs): with sweep.halving=k > 1 a point first trains epochs // k epochs."""
        return halving(self.s, int(self.config.get("epochs", 1)))[:2]

    def _promoted_share(self) -> float:
        return halving(self.s, int(self.config.get("epochs", 1)))[2]

    def _batch(self) -> int:
        """Points TPE proposes together: sweep.batch, or with sweep.trials_per_gpu the trials that run at once."""
        given = any(a.startswith("sweep.batch=") for a in self.base)
        gpu = getattr(self, "gpu_batch", None)
        return max(1, int(gpu if gpu and not given else self.s.get("batch", 2)))

    def _stage(self, name: str, keys: list[str], n: int, new: list[str], n_fresh: int, startup: int = 0) -> int:
        """n trials over `keys`: first `n_fresh` quasi-random points over the `new` keys, the others at
        the incumbent's values (the whole first stage; one batch of a later one: TPE has seen the new
        keys only at the config's values so far), then TPE over all `keys`, `sweep.batch` at a time
        (its first `startup` points random: the plain TPE of sweep.method=tpe)."""
        params = [self.params[k] for k in dict.fromkeys(keys) if k in self.params]
        if not params or n <= 0 or self._out_of_time():
            why = "out of time" if params and n > 0 else f"keys {keys}, {n} trials"
            self.console.print(f"stage {name}: nothing to search ({why})")
            return 0
        size = f"{n} trials" if not self.timed else f"{self.stage_end - time.perf_counter():.0f} s"
        self.console.print(f"stage {name}: {', '.join(p.key for p in params)} ({size})")
        seed = int(self.s.get("sobol_seed", 0))
        batch = self._batch()
        k, rung = self._halving()
        epochs = int(self.config.get("epochs", 1))
        # the same epochs as n whole runs: every point `rung` epochs, the best share of them the rest
        points = n if k == 1 else round(n * epochs / (rung + (epochs - rung) * self._promoted_share()))
        fresh = [p for p in params if p.key in new]
        n_fresh = min(n_fresh, points, 4096) if fresh else 0
        pending = [self._point(name, 1, pt, rung) for pt in sw.propose(fresh, n_fresh, seed + len(self.stages))]
        trials: list[sw.Trial] = []
        while pending:  # the quasi-random points: one launch, or with a time budget a batch at a time
            step = pending[: self._parallel() if self.deadline else len(pending)]
            if trials and self._out_of_time(self._next(trials, len(step), rung, k)):
                break
            self._run(step)
            trials, pending = trials + step, pending[len(step):]
        while len(trials) < points:
            m = min(batch, points - len(trials))
            if self._out_of_time(self._next(trials, m, rung, k)):
                break
            if self._unimportant(name, [p.key for p in params], fresh, trials, points):
                break
            pts = tpe.propose(self.params, self._history(searched=True), [p.key for p in params], self._open_exists, m,
                              seed * 1000 + len(self.trials), self.lower, startup)
            new = [self._point(name, 2, pt, rung) for pt in pts]
            self._run(new)
            trials += new
        promoted = self._promote(name, trials, k)
        self.stages.append({"name": name, "keys": [p.key for p in params], "points": len(trials)})
        best = self._best(self._finished())
        if best is not None:
            self.inc = {"values": dict(best.values), "trials": [best]}
        self._table(name, trials + promoted)
        return len(trials) if k == 1 else round((len(trials) * rung + len(promoted) * (epochs - rung)) / epochs)

    def _unimportant(self, name: str, keys: list[str], fresh: list[sw.Param], trials: list[sw.Trial],
                     points: int) -> bool:
        """Whether a later tier's stage should end here and pass its remaining trials on: once it has
        run `sweep.settle` points per new key, its new keys carry under half the share of the
        measured variance (fANOVA over every trial so far) that an equal split between the stage's
        keys would give them. (Per key: keys varied in a handful of trials among many explain little
        of the variance over all of them until they have had their chance.)"""
        settle = int(self.s.get("settle") or 0)
        if not fresh or name == "tier1" or settle <= 0 or len(trials) < settle * len(fresh):
            return False
        imp = tpe.importance(self.params, self._history(), self.lower)
        imp = {k: v for k, v in imp.items() if k in keys}
        new = [p.key for p in fresh if p.key in imp]
        if not new or sum(imp.values()) <= 0:
            return False
        share, fair = sum(imp[k] for k in new) / sum(imp.values()), len(new) / len(imp)
        if share >= fair / 2:
            return False
        rest = (f"the {max(0.0, self.stage_end - time.perf_counter()):.0f} s left of its slice pass on" if self.timed
                else f"{points - len(trials)} of its {points} points pass on")  # timed: the points are as many as fit
        self.console.print(f"stage {name}: {', '.join(new)} carry {share:.0%} of the measured variance "
                           f"(an equal split: {fair:.0%}): {rest}")
        return True

    def _point(self, stage: str, rnd: int, point: dict[str, Any], rung: int) -> sw.Trial:
        t = self._trial(stage, rnd, self.seeds[0], point)
        if self._halving()[0] > 1:
            t.launch = {"stop_after": str(rung)}
        return t

    def _promote(self, name: str, trials: list[sw.Trial], k: int) -> list[sw.Trial]:
        """Successive halving: the best share (sweep.promote, else 1/k) of a stage's short runs
        continue from their checkpoints (`resume=RUN_DIR`, the schedule already set for `epochs`) to the end."""
        if k == 1:
            return []
        ok = sorted((t for t in trials if t.ok and t.run_dir), key=self._rank)
        go = []
        for t in ok[: math.ceil(len(trials) * self._promoted_share() - 1e-9)]:
            c = self._trial(name, 4, self.seeds[0], {})
            c.values, c.launch = dict(t.values), {"resume": t.run_dir}
            c.time = t.time  # the short run's wall: what the continuation's is estimated from
            go.append(c)
        if go and self.deadline is not None:  # the best first, a batch at a time, while they fit
            epochs, rung = int(self.config.get("epochs", 1)), self._halving()[1]
            done: list[sw.Trial] = []
            for i in range(0, len(go), self._parallel()):
                step = go[i: i + self._parallel()]
                if self._out_of_time(self._batches(len(step), max(c.time for c in step) * (epochs - rung) / rung),
                                     stage=False):
                    self.console.print(f"stage {name}: {len(go) - i} continuations skipped (out of time)")
                    break
                self._run(step)
                done += step
            return done
        if go:
            self._run(go)
        return go

    def _open_exists(self, point: dict[str, Any], key: str) -> bool:
        """Whether `key` is in the config of the incumbent's groups with the point's choices so far."""
        if key in self.groups:
            return True
        groups = {**{k: v for k, v in self.inc["values"].items() if k in self.groups},
                  **{k: sw.fmt(v) for k, v in point.items() if k in self.groups}}
        try:
            return OmegaConf.select(self._compose(groups), key, default=_ABSENT) is not _ABSENT
        except Exception:  # a choice that does not compose is reported on its own trial
            return False

    def _important_keys(self) -> list[str]:
        """The most important keys, by fANOVA over all trials, until `sweep.refine_mass` of the
        measured variance is covered (at least three keys when three were measured)."""
        imp = tpe.importance(self.params, self._history(), self.lower)
        mass, keys = float(self.s.get("refine_mass", 0.8)), []
        for k, v in imp.items():
            if sum(imp[x] for x in keys) >= mass and len(keys) >= 3:
                break
            keys.append(k)
        return keys or [k for t in self.tiers for k in t]
