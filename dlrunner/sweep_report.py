"""The importance sweep's reports: importance.png (the measured order beside the guides' tiers),
best.yaml (the winner as a config file to re-run) and the console's table of a stage's trials."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrunner.sweep import Trial


def importance_plot(measured: dict[str, float], tiers: dict[str, int], metric: str, path: Path) -> None:
    """The measured order (fANOVA share of the metric's variance, most important on top), each bar
    coloured and labelled by the tier the guides put the key in."""
    from dlrunner.reporting.plots import _plt

    plt = _plt()
    keys = list(measured)[::-1]
    colours = ["tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple"]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(keys) + 1.5))
    tier = [tiers.get(k, 0) for k in keys]
    ax.barh([f"{k} (guides: tier {t})" if t else k for k, t in zip(keys, tier)], [measured[k] for k in keys],
            color=[colours[(t - 1) % len(colours)] if t else "tab:gray" for t in tier])
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colours[(t - 1) % len(colours)], label=f"tier {t}") for t in sorted(set(tier) - {0})],
              title="guides' order", loc="lower right")
    ax.set_xlabel(f"share of the variance of {metric} (fANOVA over all trials)")
    ax.set_title("Measured importance, beside the guides' tiers")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def best_yaml(values: dict[str, str], groups: set[str], metric: str, value: float, command: str) -> str:
    """A preset (`# @package _global_`) holding the incumbent: group choices as defaults overrides,
    values as nested keys."""
    lines = ["# @package _global_", f"# best of an importance sweep: {metric} = {value:.6g}",
             f"# re-run: {command}"]
    picks = {k: v for k, v in values.items() if k in groups}
    if picks:
        lines.append("defaults:")
        lines += [f"  - override /{k}: {v}" for k, v in sorted(picks.items())]
    tree: dict[str, Any] = {}
    for k, v in sorted(values.items()):
        if k in groups:
            continue
        node = tree
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v

    def emit(node: dict[str, Any], indent: int) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                lines.append(" " * indent + f"{k}:")
                emit(v, indent + 2)
            else:
                lines.append(" " * indent + f"{k}: {v}")

    emit(tree, 0)
    return "\n".join(lines) + "\n"


def stage_table(name: str, trials: list[Trial], metric: str, incumbent_key: str | None):
    """A rich table of one stage's trials, best first."""
    from rich.table import Table

    lower = "loss" in metric
    table = Table(title=f"stage {name}")
    for col in ("trial", "seed", "overrides", metric, "time", "status"):
        table.add_column(col, overflow="fold")
    ranked = sorted(trials, key=lambda t: (not t.ok, t.metric * (1 if lower else -1) if t.ok else 0))
    for t in ranked:
        mark = " *" if t.key == incumbent_key else ""
        table.add_row(str(t.trial), str(t.seed), " ".join(f"{k}={v}" for k, v in sorted(t.values.items())),
                      (f"{t.metric:.4f}" if t.ok else "-") + mark, f"{t.time:.1f}s",
                      t.status if t.ok else f"{t.status}: {t.error[:80]}")
    return table
