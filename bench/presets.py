"""`make bench ARGS="--only presets"`: every recipe in conf/experiment/ trained as its header's `Run:` line
says, with `eval_test=true` (best.pt scored once on the test split), one `dlrun` process each. The
figures its `Reaches:` line quotes are these: best val/acc, test/acc, the best epoch, the wall time.
A preset whose `Needs:` line names a CUDA GPU is skipped without one; one that cannot start here (a
download that fails offline) is recorded as skipped with dlrun's one-line error."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "conf" / "experiment"


def needs(path: Path) -> str:
    """The preset's `# Needs:` header line ('' when it has none)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"# Needs: (.*)", line)
        if m:
            return m.group(1)
    return ""


def data_root_override(name: str) -> list[str]:
    """Online data sets download into the checkout's data/ (ignored by git), so a second bench run reuses them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dlrunner.reporting.rundir import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"])
    return [f"data.root={ROOT / 'data'}"] if OmegaConf.select(cfg, "data.root") is not None else []


def measure(name: str, tmp: Path) -> dict:
    args = [f"experiment={name}", "eval_test=true"]
    cwd = tmp / f"preset-{name}"
    cwd.mkdir()
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "dlrunner", *args, *data_root_override(name),
                           "hydra.run.dir=outputs/run"], cwd=cwd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dlrun: error:")]
        return {"command": " ".join(["dlrun", *args]), "skipped": (errors or proc.stderr.splitlines()[-1:] or ["?"])[-1]}
    s = json.loads((cwd / "outputs" / "run" / "summary.json").read_text())
    return {"command": " ".join(["dlrun", *args]), "val/acc": s["best"]["val/acc"], "test/acc": s["best"].get("test/acc"),
            "best_epoch": s["best_epoch"], "epochs": s["epochs_run"], "wall_s_incl_startup": round(wall, 1),
            "device": s["device"], "threads": s["threads"], "params": s["model"]["params"]}


def presets(tmp: Path, names: list[str] | None = None) -> dict:
    out = {}
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        name = path.stem
        if names and name not in names:
            continue
        if "CUDA" in needs(path) and not torch.cuda.is_available():
            out[name] = {"command": f"dlrun experiment={name} eval_test=true", "skipped": "needs a CUDA GPU"}
        else:
            out[name] = measure(name, tmp)
        print("presets", name, out[name], flush=True)
    return out
