"""The importance sweep's clock (`sweep.time_budget`), mixed into Stages: estimates of what the next
batch, a stage's continuations and the confirmation will take, from the wall times of the trials so
far and the launcher's own measured cost per batch, and the checks that keep the sweep within its
deadline (and, with `sweep.budget=auto`, each stage within its share of the time)."""
from __future__ import annotations

import math
import time

from dlrunner import sweep as sw
from hydra_plugins.dlrun_importance_sweeper import placement


class Clock:
    """Time estimates and checks; the Sweeper provides config, trials, deadline, t0, timed, stage_end, ..."""

    def _slice(self, share: float) -> None:
        """With the stages sharing the time (sweep.budget=auto): the next stage may use `share` of
        the time left, less the confirmation's."""
        if self.timed:
            left = self.t0 + self.deadline - time.perf_counter() - self._confirm_time()
            self.stage_end = time.perf_counter() + share * max(0.0, left)

    def _out_of_time(self, extra: float = 0.0, stage: bool = True) -> bool:
        """Whether work of `extra` seconds would end after the deadline (or the stage's slice of the
        time), less the time the confirmation needs afterwards."""
        if self.deadline is None:
            return False
        now = time.perf_counter() + extra
        if stage and self.stage_end is not None and now > self.stage_end:
            return True
        return now - self.t0 + self._confirm_time() > self.deadline

    def _parallel(self) -> int:
        return placement.parallel(self.config, self._batch())

    def _whole(self, t: sw.Trial) -> float:
        """Seconds a whole run of t's point takes, from t's own wall time (a short run, a continuation)."""
        k, rung = self._halving()
        epochs = int(self.config.get("epochs", 1))
        if t.launch.get("resume"):
            return t.time * epochs / max(1, epochs - rung)
        return t.time * epochs / rung if t.launch.get("stop_after") else t.time

    def _batches(self, n: int, seconds: float) -> float:
        """Wall time of n trials of `seconds` each on the launcher: a tenth for the load, and the
        launcher's own measured cost per batch."""
        over = getattr(self, "overheads", [])[-10:] or [0.5]
        return math.ceil(n / self._parallel()) * (1.1 * seconds + sum(over) / len(over)) if n > 0 else 0.0

    def _launched(self, trials: list[sw.Trial], wall: float) -> None:
        """Note the sweep's own cost per batch: the wall of a launch less its trials' own times (process
        start-up, composing the job), and the time since the previous launch ended (TPE's proposals,
        the importance estimate, the stage tables), which grows with the trials and with the load."""
        end = time.perf_counter()
        since = max(0.0, end - wall - getattr(self, "last_launch_end", getattr(self, "t0", end - wall)))
        self.last_launch_end = end
        batches = math.ceil(len(trials) / self._parallel())
        over = (max(0.0, wall - sum(t.time for t in trials) / self._parallel()) + since) / batches
        self.overheads = [*getattr(self, "overheads", []), over]

    def _confirm_time(self) -> float:
        """The confirmation's estimated wall time: its re-runs of the best points, whole runs."""
        n = getattr(self, "n_confirm", 0)
        if n <= 0:
            return 0.0
        best = self._ranked()[:n] or [t for t in self.trials if t.ok]
        return self._batches(n, max((self._whole(t) for t in best), default=0.0))

    def _next(self, trials: list[sw.Trial], m: int, rung: int, k: int) -> float:
        """Estimated seconds of a stage's next m trials and of the continuations it then owes."""
        if self.deadline is None:
            return 0.0
        epochs = int(self.config.get("epochs", 1))
        ran = [t.time for t in trials if t.ok] or [self._whole(t) * rung / epochs for t in self.trials if t.ok] or [0.0]
        cost = self._batches(m, sum(ran) / len(ran))
        if k > 1:  # the stage's best share then continues for the other epochs
            n = math.ceil((len(trials) + m) * self._promoted_share() - 1e-9)
            cost += self._batches(n, max(ran) * (epochs - rung) / rung)
        return cost
