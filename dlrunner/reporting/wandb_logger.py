"""`logger=wandb`: one Weights & Biases run per dlrun run, offline unless the user has logged in.

The run's resolved config is the W&B config, each epoch's row is logged with step = epoch, the
summary (status, best epoch and its metrics, verdict, wall time) goes to the W&B summary, and the
pictures (the input grid, curves.png, the confusion matrix, top losses, the LR finder's plot) are
logged as images. A run resumed from a folder that logged to W&B continues the same W&B run id.
W&B's client cannot set the KILLED state (its server does, for runs stopped from the web page), so an
interrupted run is marked preempting, W&B's state for a run that will be resumed, and ends with a
non-zero exit code, as a failed or diverged one does.
"""
from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.reporting.files import write_json
from dlrunner.reporting.loggers import need, run_name, scalars

MODES = ("auto", "online", "offline", "disabled")
# summary["status"] -> exit code given to wandb's finish (0: FINISHED; anything else: FAILED)
EXIT_CODE = {"completed": 0, "failed": 1, "diverged": 3, "interrupted": 130}
PICTURES = ("curves.png", "confusion.png", "top_losses.png", "lr_finder.png")
ID_FILE = "wandb.json"  # in the run folder: the W&B run id, so that a resumed run continues it
SUMMARY_KEYS = ("status", "fit", "optimized_metric", "value", "best_epoch", "epochs_run", "wall_time", "device",
                "precision", "resumed_from")


def logged_in(env: dict[str, str] | None = None) -> bool:
    """An API key in the environment, or the entry `wandb login` writes to ~/.netrc for the W&B host."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(env.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str, env: dict[str, str] | None = None) -> str:
    """mode=auto: WANDB_MODE when set, else online when logged in, else offline (no account, no network)."""
    env = os.environ if env is None else env
    if mode != "auto":
        return mode
    return env.get("WANDB_MODE") or ("online" if logged_in(env) else "offline")


class WandbLogger:
    """A W&B run per dlrun run; see the module docstring. The files go to `dir` (null: the run folder),
    under wandb/; an offline run is uploaded later with `wandb sync <that folder>/wandb/offline-run-*`."""

    def __init__(self, project: str = "dlrun", entity: str | None = None, mode: str = "auto",
                 dir: str | None = None, tags: list[str] | tuple = (), group: str | None = None):
        if str(mode) not in MODES:
            raise DlrunError(f"logger.wandb.mode must be one of {' | '.join(MODES)}, got {mode}")
        need("wandb", "wandb", "wandb")
        self.project, self.entity, self.mode = str(project), entity, str(mode)
        self.dir, self.tags, self.group = dir, [str(t) for t in (tags or ())], group
        self.run: Any = None
        self.run_dir: Path | None = None
        self.last_step = 0

    def start(self, run_dir, config, data, sample=None, history=(), resumed_from=None) -> None:
        import wandb

        self.run_dir = Path(run_dir)
        earlier = previous_id(resumed_from)  # the interrupted run's W&B id, when it logged to W&B
        folder = Path(self.dir).expanduser() if self.dir else self.run_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=self.project, entity=self.entity, dir=str(folder), config=config,
                              name=run_name(self.run_dir, config), id=earlier,
                              resume="allow" if earlier else None, mode=resolve_mode(self.mode),
                              tags=self.tags or None, group=self.group,
                              settings=wandb.Settings(console="off"))  # the console keeps its live display
        write_json({"id": self.run.id, "project": self.project}, self.run_dir / ID_FILE, compact=True)
        if earlier:
            self.last_step = max((int(r["epoch"]) for r in history), default=0)  # those epochs are in W&B already
            return
        for row in history:  # resumed from a run that did not log to W&B: this run carries its epochs too
            self.log_epoch(row, int(row["epoch"]), None)
        self._samples(data, sample)

    def _samples(self, data, sample) -> None:
        """The inputs as the net receives them, at step 0: a grid of images, samples.png otherwise."""
        import wandb

        if data.modality == "image":
            from torchvision.utils import make_grid

            x = sample[0] if sample is not None else data.train.x[:32]
            grid = make_grid(x[:32].detach().float().cpu(), nrow=8, normalize=True)  # min-max to [0, 1]
            self.run.log({"samples": wandb.Image(grid)}, step=self.last_step)
        elif (self.run_dir / "samples.png").is_file():
            self.run.log({"samples": wandb.Image(str(self.run_dir / "samples.png"))}, step=self.last_step)

    def log_epoch(self, row: dict, step: int, model: nn.Module | None) -> None:
        self.last_step = int(row["epoch"])
        self.run.log(scalars(row), step=self.last_step)

    def finish(self, summary: dict) -> None:
        import wandb

        pictures = {Path(name).stem: wandb.Image(str(self.run_dir / name)) for name in PICTURES
                    if (self.run_dir / name).is_file()}
        if pictures:
            self.run.log(pictures, step=self.last_step)  # beside the last epoch's metrics
        self.run.summary.update({k: summary.get(k) for k in SUMMARY_KEYS if k in summary})
        for part in ("best", "final"):
            self.run.summary.update({f"{part}/{k}": v for k, v in scalars(summary.get(part) or {}).items()})
        status = summary.get("status")
        if status == "interrupted":
            self.run.mark_preempting()  # W&B's word for a run that stopped and will be resumed
        self.run.finish(exit_code=EXIT_CODE.get(status, 1))


def previous_id(resumed_from: Path | None) -> str | None:
    """The W&B run id the interrupted run folder recorded, if it logged to W&B."""
    if not resumed_from:
        return None
    try:
        return json.loads((Path(resumed_from) / ID_FILE).read_text())["id"]
    except (OSError, ValueError, KeyError):
        return None
