"""What the importance sweep reports (a part of ImportanceSweeper): a table per stage on the
console, the measured importance (fANOVA), and the files a finished or stopped sweep leaves:
importance.json, best.yaml (beside the trials and in best/, for `--config-dir`), importance.png
and stages.txt."""
from dlrunner import sweep as sw
from dlrunner import sweep_report as report
from dlrunner import sweep_tpe as tpe
from dlrunner.errors import DlrunError
from dlrunner.reporting.files import atomic_write, write_json


class Results:
    """The reporting half of the sweeper: reads its trials, stages and incumbent (self.inc)."""

    def _table(self, name: str, trials: list[sw.Trial]) -> None:
        inc_key = self.inc["trials"][0].key if getattr(self, "inc", None) else None
        self.console.print(report.stage_table(name, trials, self.metric, inc_key))

    def _measured(self) -> dict[str, float]:
        """fANOVA importance over every searched trial (empty when it cannot be estimated)."""
        if not self.params:
            return {}
        try:
            return tpe.importance(self.params, self._history(), self.lower)
        except DlrunError:
            raise
        except Exception as e:  # an estimate is a report: never lose the sweep over it
            self.console.print(f"importance not measured: {e}")
            return {}

    def _finish(self, stopped: str) -> None:
        inc = getattr(self, "inc", None)
        measured = self._measured()
        tiers = {k: i + 1 for i, t in enumerate(self.s.get("tiers") or []) for k in t}  # the guides', not sweep.order's
        result = {"optimized_metric": self.metric, "stopped": stopped or None, "trials": len(self.trials),
                  "failed": sum(t.status == "failed" for t in self.trials), "measured": measured,
                  "params": {k: {"importance": measured.get(k), "tier": tiers.get(k)} for k in self.params},
                  "stages": self.stages}
        if inc:
            result["best"] = {"values": inc["values"], "metric": _mean(inc["trials"]),
                              "seeds": [t.seed for t in inc["trials"]], "trials": [t.trial for t in inc["trials"]]}
            keep = [a for a in self.base if _key(a) != "seed" and not _key(a).startswith(("sweep", "hydra"))]
            command = " ".join(["dlrun --config-dir", str(self.dir.resolve()), "+best=best", *keep])
            (self.dir / "best").mkdir(exist_ok=True)
            text = report.best_yaml(inc["values"], self.groups, self.metric, _mean(inc["trials"]), command)
            for path in (self.dir / "best.yaml", self.dir / "best" / "best.yaml"):
                atomic_write(path, lambda f: f.write(text))
            self.console.print(f"best {self.metric} {_mean(inc['trials']):.4f} (mean of {len(inc['trials'])} seeds): "
                               + (" ".join(f"{k}={v}" for k, v in sorted(inc["values"].items())) or "the defaults"))
            self.console.print(f"re-run it: {command}")
        write_json(result, self.dir / "importance.json")
        if measured:
            try:
                report.importance_plot(measured, tiers, self.metric, self.dir / "importance.png")
            except Exception as e:  # a plot is a convenience: never lose the sweep over it
                self.console.print(f"importance.png not written: {e}")
        stages = self.console.export_text()
        atomic_write(self.dir / "stages.txt", lambda f: f.write(stages))
        self.console.print(f"sweep dir: {self.dir} (trials.csv, importance.json, best.yaml)")


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _mean(trials: list[sw.Trial]) -> float:
    return sum(t.metric for t in trials) / len(trials) if trials else float("nan")
