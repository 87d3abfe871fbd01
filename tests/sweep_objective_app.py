"""A Hydra app on dlrun's own config whose metric is a known function of the swept values, so the
importance sweeper's decisions can be checked in a second (tests/test_sweep.py). Each call is
appended to $SWEEP_CALLS (seed, lr, width, data.val_seed); model.depth >= 3 raises (a crashing trial); $SWEEP_KILL_AT=N kills the
process at the N-th call (a sweep interrupted mid-way); $SWEEP_SLEEP=S makes a whole run take S
seconds (a short one its share); a
finished call writes summary.json as dlrun does; stop_after and resume act as in dlrun (a paused run
scores lower, a continued one as if trained straight through); with a `*loss` optimized_metric it
returns 1 - the objective (a loss)."""
import json
import math
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dlrunner.reporting.rundir import register_resolvers  # noqa: E402

CONF = str(Path(__file__).resolve().parent.parent / "conf")


def objective(cfg: DictConfig) -> float:
    """Peaks at lr 3e-3, cosine, width 16, glorot, gelu; the seed moves it by 0.002."""
    value = 0.9 - 0.1 * (math.log10(cfg.optim.lr) - math.log10(3e-3)) ** 2
    value -= 0.0 if cfg.schedule._target_.endswith("cosine") else 0.05
    value -= 0.01 * abs(math.log2(cfg.model.width / 16))
    value += 0.02 * (cfg.model.init == "glorot") + 0.02 * (cfg.model.act == "gelu")
    return value + 0.002 * cfg.seed


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def app(cfg: DictConfig) -> float:
    calls = Path(os.environ["SWEEP_CALLS"])
    with calls.open("a") as f:
        f.write(f"{cfg.seed} {cfg.optim.lr} {cfg.model.width} {cfg.data.val_seed}\n")
    n = len(calls.read_text().splitlines())
    if os.environ.get("SWEEP_KILL_AT") and n >= int(os.environ["SWEEP_KILL_AT"]):
        os._exit(137)
    if cfg.model.depth >= 3:
        raise RuntimeError(f"CUDA out of memory (depth {cfg.model.depth})")
    if cfg.model.hidden > 250:
        return float("nan")
    # stop_after=M pauses at epoch M (a short run scores lower, the order of configurations is kept);
    # resume=RUN_DIR continues a paused run to the end
    epochs = min(cfg.epochs, cfg.stop_after or cfg.epochs)
    if cfg.resume:
        before = json.loads((Path(cfg.resume) / "summary.json").read_text())
        assert before["status"] == "paused", "only a paused run is continued"
    value = objective(cfg) - 0.05 * (1 - epochs / cfg.epochs)
    if str(cfg.optimized_metric).endswith("loss"):  # the same objective as a loss: lower is better
        value = 1.0 - value
    done = int(json.loads((Path(cfg.resume) / "summary.json").read_text())["epochs_run"]) if cfg.resume else 0
    wall = float(os.environ.get("SWEEP_SLEEP", 0)) * (epochs - done) / cfg.epochs
    time.sleep(wall)
    # what dlrun writes at the end of a run, and what a resumed sweep reads back
    out = Path(HydraConfig.get().runtime.output_dir) / "summary.json"
    status = "paused" if epochs < cfg.epochs else "completed"
    out.write_text(json.dumps({"status": status, "value": value, "wall_time": wall, "epochs_run": epochs}))
    return value


if __name__ == "__main__":
    register_resolvers()
    app()
