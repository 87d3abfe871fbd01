"""What the user sees: a rich progress bar on a terminal, one plain line per epoch otherwise."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


class Reporter:
    """Progress while training and a table at the end. `live` follows whether stdout is a terminal."""

    def __init__(self, live: bool | None = None):
        self.live = sys.stdout.isatty() if live is None else live
        self.console = Console(highlight=False, soft_wrap=not self.live)
        self._progress: Progress | None = None
        self._task = None

    def info(self, msg: str) -> None:
        self.console.print(msg)

    def warn(self, msg: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {msg}")

    @contextmanager
    def epoch(self, epoch: int, epochs: int, steps: int, start: int = 0):
        if not self.live:
            yield
            return
        cols = [TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn()]
        with Progress(*cols, console=self.console, transient=True) as prog:
            self._progress = prog
            self._task = prog.add_task("train", total=steps, completed=start, stats="")
            yield
        self._progress = None

    def step(self, done: int, loss: float | None, lr: float, its: float) -> None:
        """Refresh the bar (called every log_every steps)."""
        if self._progress is not None:
            stats = f"loss {loss:.4f}  lr {lr:.2e}  {its:.1f} it/s" if loss is not None else ""
            self._progress.update(self._task, completed=done, stats=stats)

    def epoch_end(self, row: dict, epochs: int, best: bool) -> None:
        parts = [f"epoch {row['epoch']}/{epochs}"] + [f"{k} {fmt(row[k])}" for k in KEYS if k in row]
        parts += [f"lr {row['lr']:.2e}", f"{row['time']:.1f}s"]
        self.console.print("  ".join(parts) + ("  *" if best else ""))

    def final(self, summary: dict) -> None:
        t = Table(title=f"dlrun: {summary['status']} in {summary['wall_time']:.1f}s", show_edge=True)
        picked = summary.get("mode") != "final"  # mode=final picks no epoch: the final weights only
        t.add_column("metric")
        t.add_column("final", justify="right")
        if picked:
            t.add_column(f"best (epoch {summary.get('best_epoch')})", justify="right")
        for k in KEYS + ("test/loss", "test/acc"):
            if k in summary["final"] or k in summary["best"]:
                best = [fmt(summary["best"].get(k, ""))] if picked else []
                t.add_row(k, fmt(summary["final"].get(k, "")), *best)
        self.console.print(t)
        fit = summary.get("fit")
        if fit:
            self.console.print(f"fit: [bold]{fit['verdict']}[/bold] ({fit['evidence']})")
            self.console.print("  next: " + "; ".join(fit["remedies"]))
        self.console.print(f"run folder: {summary['run_dir']}")

    def per_class(self, scores: dict[str, dict[str, float]], split: str = "val", limit: int = 20, worst: int = 10) -> None:
        """Precision / recall / F1 per class; with more than `limit` classes only the `worst` by F1."""
        items = list(scores.items())
        title = f"per class ({split})"
        if len(items) > limit:
            items = sorted(items, key=lambda kv: kv[1]["f1"])[:worst]
            title = f"the {worst} worst of {len(scores)} classes by F1 ({split})"
        t = Table(title=title, show_edge=True)
        for col in ("class", "precision", "recall", "F1", "support"):
            t.add_column(col, justify="left" if col == "class" else "right")
        for name, s in items:
            t.add_row(name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"]))
        self.console.print(t)
