"""The doctor's report: a line per check in the console (✓ / ⚠ / ✗, evidence, fix), and
doctor.md + doctor.json in the run folder."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from dlrunner.doctor.core import MARK, Exam
from dlrunner.doctor.repair import lines as repair_lines
from dlrunner.reporting.files import atomic_write, write_json

STYLE = {"pass": "green", "skip": "dim", "warn": "yellow", "fail": "red"}


def _counts(ex: Exam) -> dict[str, int]:
    c = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
    for f in ex.findings.values():
        c[f.status] += 1
    return c


def print_report(ex: Exam, console: Console, wall: float) -> None:
    layers = ex.findings.get("model")
    if layers and layers.details.get("layers"):
        t = Table(title="layers (one forward of 8 samples)", show_edge=False, pad_edge=False)
        for col in ("layer", "type", "output", "params"):
            t.add_column(col, justify="right" if col == "params" else "left")
        rows = layers.details["layers"]
        for r in rows[:40]:
            t.add_row(r["name"], r["type"], str(tuple(r["out"]) if isinstance(r["out"], list) else r["out"]),
                      f"{r['params']:,}")
        if len(rows) > 40:
            t.add_row(f"... {len(rows) - 40} more in doctor.md", "", "", "")
        console.print(t)
    for f in ex.findings.values():
        s = f.status
        console.print(f"[{STYLE[s]}]{MARK[s]}[/{STYLE[s]}] [bold]{f.title}[/bold]  {f.summary}  "
                      f"[dim]({f.seconds:.1f}s)[/dim]", soft_wrap=True)
        for item in f.items:
            if item.status in ("warn", "fail") and item.evidence != f.summary:
                console.print(f"    [{STYLE[item.status]}]{MARK[item.status]}[/{STYLE[item.status]}] {item.evidence}",
                              soft_wrap=True)
            if item.status in ("warn", "fail") and item.fix:
                console.print(f"      [dim]fix:[/dim] {item.fix}", soft_wrap=True)
    if ex.causes:
        console.print("[bold]likely causes of the single-batch failure[/bold] (most supported first):")
        for i, c in enumerate(ex.causes, 1):
            console.print(f"  {i}. {c['cause']}" + (f"  [dim]evidence: {c['evidence']}[/dim]" if c["evidence"] else ""))
    if ex.repairs:
        console.print("[bold]repairs[/bold] (the failing experiment re-run with the remedy applied):")
        for line in repair_lines(ex.repairs):
            console.print(f"  {line}", soft_wrap=True)
    c = _counts(ex)
    verdict = "[red]FAIL[/red]" if c["fail"] else ("[yellow]pass with warnings[/yellow]" if c["warn"] else "[green]PASS[/green]")
    console.print(f"doctor: {verdict}: {c['pass']} passed, {c['warn']} warnings, {c['fail']} failed"
                  + (f", {c['skip']} skipped" if c["skip"] else "") + f" in {wall:.1f}s")


def write_report(ex: Exam, run_dir: Path, wall: float, config_yaml: str) -> None:
    c = _counts(ex)
    doc = {"status": "fail" if c["fail"] else "pass", "counts": c, "wall_time": wall,
           "checks": [f.to_dict() for f in ex.findings.values()], "causes": ex.causes,
           "repairs": [vars(r) for r in ex.repairs]}
    write_json(doc, run_dir / "doctor.json", default=_plain)
    lines = ["# dlrun doctor", "", f"{c['pass']} passed, {c['warn']} warnings, {c['fail']} failed"
             + (f", {c['skip']} skipped" if c["skip"] else "") + f" in {wall:.1f}s.", "",
             "| | check | evidence | fix |", "|---|---|---|---|"]
    for f in ex.findings.values():
        for i, item in enumerate(f.items):
            lines.append(f"| {MARK[item.status]} | {f.title if i == 0 else ''} | {_md(item.evidence)} | {_md(item.fix)} |")
    if ex.causes:
        lines += ["", "## Likely causes of the single-batch failure", ""]
        lines += [f"{i}. {c['cause']}" + (f" (evidence: {c['evidence']})" if c["evidence"] else "")
                  for i, c in enumerate(ex.causes, 1)]
    if ex.repairs:
        lines += ["", "## Repairs", ""] + [f"- {_md(r)}" for r in repair_lines(ex.repairs)]
    model = ex.findings.get("model")
    if model and model.details.get("layers"):
        lines += ["", "## Layers", "", "| layer | type | output | params |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['type']} | {tuple(r['out']) if isinstance(r['out'], list) else r['out']} "
                  f"| {r['params']:,} |" for r in model.details["layers"]]
    lines += ["", "The input grid the net receives is in samples.png.", "", "## Config", "", "```yaml",
              config_yaml.rstrip(), "```", ""]
    text = "\n".join(lines)
    atomic_write(run_dir / "doctor.md", lambda f: f.write(text))


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _plain(v):
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return v.tolist()
    except ImportError:
        pass
    return str(v)
