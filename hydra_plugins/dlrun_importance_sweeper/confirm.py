"""The importance sweep's last step, mixed into Stages: the best points re-run with the second seed,
on another train/val split of the same data (`sweep.resplit`, `data.val_seed`: the test split stays
put), and the pick, the best 2-seed mean (with a time budget, as many re-runs as fit). Among many
points the best validation scores are partly the luck of one split's samples; a re-run on other
samples does not share that luck."""
from __future__ import annotations

from dlrunner import sweep as sw


class Confirm:
    """The Sweeper provides _finished, _trial, _run, _table, _whole, _batches, _out_of_time, ..."""

    def _ranked(self) -> list[sw.Trial]:
        """Finished trials, best first (equal metrics: the lower val/loss first), one per point."""
        ranked, seen = [], set()
        for t in sorted((t for t in self._finished() if t.ok), key=self._rank):
            if t.key not in seen:
                seen.add(t.key)
                ranked.append(t)
        return ranked

    def _confirm(self, k: int) -> None:
        """Re-run the k best distinct points with the second seed; the pick is the best 2-seed mean.
        With a time budget only as many as fit before the deadline."""
        ranked = self._ranked()
        if self.deadline is not None and k > 0:
            self.n_confirm = 0  # nothing after the confirmation to leave time for
            while k > 0 and self._out_of_time(self._batches(k, max((self._whole(t) for t in ranked[:k]), default=0.0)),
                                              stage=False):
                k -= 1
            if k < int(self.s.get("confirm", 2)):
                self.console.print(f"confirm: {k} re-runs fit in the time left (sweep.time_budget)")
        if k <= 0 or not ranked:
            return
        again, resplit = [], self._resplit()
        for t in ranked[:k]:
            r = self._trial("confirm", 3, self.seeds[1], {})
            r.values = dict(t.values)
            if resplit:
                r.launch = {"data.val_seed": str(self.seeds[1])}
            again.append(r)
        self._run(again)
        pairs = [[t, r] for t, r in zip(ranked, again) if r.ok]
        if pairs:
            mean = lambda ts: sum(x.metric for x in ts) / len(ts)  # noqa: E731
            best = (min if self.lower else max)(pairs, key=mean)
            self.inc = {"values": dict(best[0].values), "trials": best}
            self.console.print(f"pick: the best {self.metric} over {len(pairs[0])} seeds"
                               + (" and validation splits" if resplit else "")
                               + f", {mean(best):.4f} (of {len(pairs)} points re-run)")
        self._table("confirm", again)

    def _resplit(self) -> bool:
        """Whether the re-runs draw another validation split: `sweep.resplit`, a data config with
        `val_seed`, and no `data.val_seed` given on the command line."""
        if not self.s.get("resplit", True) or "data.val_seed" in self.fixed:
            return False
        try:
            return "val_seed" in (self._compose({}).get("data") or {})
        except Exception:  # a config that does not compose fails on its own trials
            return False
