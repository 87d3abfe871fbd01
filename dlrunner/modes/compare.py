"""Compare finished (and unfinished) runs side by side: `dlrun mode=compare [dir=PATH]` or
`dlrun-report [PATH] [--sort KEY] [--csv FILE] [--plot FILE]`.

Every run folder under PATH (one with summary.json, or .hydra/ plus metrics.csv for a run that is
still going or died without a summary) becomes one row: the overrides that differ between the runs,
status, best and final metrics, best epoch, epochs run, wall time and the fit verdict. The table is
printed with rich, written in full to a CSV file, and the validation curves of all runs are overlaid
in one picture.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dlrunner.reporting.console import fmt
from dlrunner.reporting.files import write_rows
from dlrunner.errors import DlrunError
from dlrunner.modes import ModeRun
from dlrunner.modes.compare_runs import Run, _num, find_runs, load_run, split_overrides

METRICS = ("val/acc", "val/loss", "train/acc", "train/loss", "test/acc")
# (column, header) of the printed table after the override columns; the CSV has every column
SHOWN = (("status", "status"), ("epochs_run", "epochs"), ("best_epoch", "best\nepoch"),
         ("best/val/acc", "val/acc\nbest"), ("best/val/loss", "val/loss\nbest"),
         ("final/val/acc", "val/acc\nfinal"), ("final/val/loss", "val/loss\nfinal"),
         ("final/train/acc", "train/acc\nfinal"), ("final/train/loss", "train/loss\nfinal"),
         ("best/test/acc", "test/acc\nbest"), ("fit", "fit"), ("wall_time", "time"))


def record(run: Run, keys: list[str], metrics: list[str]) -> dict[str, Any]:
    """One flat row: the run's settings for `keys`, then its numbers."""
    row: dict[str, Any] = {"run": run.name}
    row |= {k: run.setting(k) for k in keys}
    row |= {"status": run.status, "optimized_metric": run.optimized_metric, "value": run.value,
            "best_epoch": run.best_epoch, "epochs_run": run.epochs_run}
    row |= {f"best/{m}": run.best.get(m) for m in metrics}
    row |= {f"final/{m}": run.final.get(m) for m in metrics}
    row |= {"wall_time": run.wall_time, "fit": run.fit, "path": str(run.path.resolve())}
    return row


def sort_column(key: str | None, rows: list[dict], default_metric: str) -> str:
    """A sort key as the user writes it (val/acc, final/val/loss, optim.lr) -> a column name."""
    key = key or default_metric
    if rows and key not in rows[0] and f"best/{key}" in rows[0]:
        return f"best/{key}"
    if rows and key not in rows[0]:
        raise DlrunError(f"sort={key}: not a column; use one of {', '.join(rows[0])}")
    return key


def higher_first(column: str, rows: list[dict]) -> bool:
    """Accuracies best (highest) first, losses and times lowest first; `value` follows its metric."""
    if column == "value":
        metric = rows[0]["optimized_metric"] if rows else "val/acc"
        return "loss" not in metric
    return "acc" in column


def sort_rows(rows: list[dict], column: str) -> list[dict]:
    def key(row):
        v = row.get(column)
        num = _num(v) if not isinstance(v, bool) else None
        missing = v is None or v == "" or (num is None and isinstance(v, float))
        if num is not None:
            return (missing, -num if desc else num, "")
        return (missing, 0.0, str(v))
    desc = higher_first(column, rows)
    return sorted(rows, key=key)


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_rows([{k: "" if v is None else v for k, v in row.items()} for row in rows], path)


def label(run: Run, differing: list[str]) -> str:
    return ", ".join(f"{k}={run.setting(k)}" for k in differing) or run.name


def plot(runs: list[Run], labels: dict[str, str], path: Path) -> Path:
    """val/acc and val/loss against epoch, one line per run, in the order of the table."""
    from dlrunner.reporting.plots import _plt

    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("val/acc", "val/loss")):
        for run in runs:
            pts = [(r["epoch"], r[metric]) for r in run.history if r.get(metric) is not None and r.get("epoch")]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=labels[run.name])
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not fractions of one
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.suptitle(f"validation curves of {len(runs)} runs", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def table(rows: list[dict], differing: list[str], column: str, title: str) -> Table:
    present = [(c, h) for c, h in SHOWN if any(r.get(c) not in (None, "") for r in rows)]
    t = Table(title=title, show_edge=True)
    for name in ["run", *differing]:
        t.add_column(name + (" ^" if name == column else ""), style="bold" if name in differing else None)
    for c, h in present:
        t.add_column(h + (" ^" if c == column else ""), justify="right" if c not in ("status", "fit") else "left")
    for row in rows:
        cells = [row["run"], *(row[k] for k in differing)]
        for c, _ in present:
            v = row.get(c)
            cells.append("" if v is None else f"{v:.1f}s" if c == "wall_time" else fmt(v))
        t.add_row(*map(str, cells))
    return t


def compare(root: str | Path, sort: str | None = None, csv_path: Path | None = None, plot_path: Path | None = None,
            console: Console | None = None, exclude: Path | None = None) -> list[dict]:
    """Scan root, print the table, write the CSV and the picture; returns the sorted rows."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DlrunError(f"{root}: no such folder")
    if not root.is_dir():
        raise DlrunError(f"{root}: not a folder")
    runs = [load_run(p, root) for p in find_runs(root, exclude)]
    if not runs:
        raise DlrunError(f"no runs found under {root}")
    common, differing = split_overrides(runs)
    metrics = [m for m in METRICS if any(m in r.best or m in r.final for r in runs)]
    rows = [record(r, [*common, *differing], metrics) for r in runs]
    default = Counter(r.optimized_metric for r in runs).most_common(1)[0][0]
    column = sort_column(sort, rows, default)
    rows = sort_rows(rows, column)
    console = console or report_console()
    order = "highest first" if higher_first(column, rows) else "lowest first"
    if common:
        console.print("common: " + " ".join(f"{k}={v}" for k, v in common.items()))
    console.print(table(rows, differing, column, f"{len(runs)} runs under {root}, by {column} ({order})"))
    by_name = {r.name: r for r in runs}
    ordered = [by_name[row["run"]] for row in rows]
    written = []
    if csv_path is not None:
        written.append(write_csv(rows, Path(csv_path)))
    if plot_path is not None:
        written.append(plot(ordered, {r.name: label(r, differing) for r in runs}, Path(plot_path)))
    if written:
        console.print("wrote " + ", ".join(str(p) for p in written))
    return rows


def report_console() -> Console:
    """A table is as wide as it needs to be; off a terminal (a pipe, a file) it is not squeezed into 80 columns."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)


def run(job: ModeRun) -> None:
    """mode=compare: scan `dir` (default out_dir); compare.csv and compare.png go into this run's own folder."""
    cfg, run_dir = job.cfg, job.run_dir
    rows = compare(cfg.get("dir") or cfg.out_dir, sort=cfg.get("sort"), csv_path=run_dir / "compare.csv",
                   plot_path=run_dir / "compare.png", exclude=run_dir)
    if cfg.get("csv"):
        report_console().print(f"wrote {write_csv(rows, Path(str(cfg.csv)))}")


def main(argv: list[str] | None = None) -> int:
    """Console script `dlrun-report`."""
    p = argparse.ArgumentParser(prog="dlrun-report", description="Compare the runs under a folder (default outputs/): "
                                "a table of the overrides that differ and the metrics, a CSV and the validation curves.")
    p.add_argument("path", nargs="?", default="outputs", help="folder to scan: outputs/, a sweep folder, ... "
                   "(default: outputs)")
    p.add_argument("--sort", help="column to sort by: val/acc, final/val/loss, wall_time, optim.lr, ... "
                   "(default: the optimized metric, best first)")
    p.add_argument("--csv", default="compare.csv", help="CSV file with every column (default: ./compare.csv)")
    p.add_argument("--plot", default="compare.png", help="picture of the validation curves (default: ./compare.png)")
    args = p.parse_args(argv)
    try:
        compare(args.path, sort=args.sort, csv_path=Path(args.csv), plot_path=Path(args.plot))
    except DlrunError as e:
        print(f"dlrun-report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
