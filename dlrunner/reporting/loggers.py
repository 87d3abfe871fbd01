"""Experiment loggers: where a run's numbers go besides the run folder (`logger=[csv,tensorboard,mlflow]`).

Each entry of the `logger` group builds one object with three calls: `start` once before the first
epoch, `log_epoch` after every epoch (the same row that goes to metrics.csv) and `finish` with the
summary, also when the run failed or was interrupted. A logger whose package is missing stops the
run with one line naming the pip extra before any work starts.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dlrunner.errors import DlrunError

# summary["status"] -> MLflow's run status
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "diverged": "FAILED", "interrupted": "KILLED"}
MLFLOW_PARAM_LEN = 6000  # MLflow refuses longer param values
MLFLOW_BATCH = 100  # MLflow's limit of params per log_batch call


@runtime_checkable
class Logger(Protocol):
    def start(self, run_dir: Path, config: dict, data: Any, sample: tuple[torch.Tensor, torch.Tensor] | None = None,
              history: list[dict] = (), resumed_from: Path | None = None) -> None: ...

    def log_epoch(self, row: dict, step: int, model: nn.Module) -> None: ...

    def finish(self, summary: dict) -> None: ...


def need(module: str, extra: str, name: str):
    """Import an optional package, or stop with one line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DlrunError(f'logger={name} needs the {extra} package: pip install "dlrunner[{extra}]"') from None


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 3e-4}} -> {"optim.lr": 3e-4}; lists stay whole (one value per key)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= flatten(v, key + ".")
        else:
            out[key] = v
    return out


def scalars(row: dict) -> dict[str, float]:
    """The numbers of a metrics row, without the step itself."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))
            and not isinstance(v, bool)}


class CSVLogger:
    """metrics.csv in the run folder. The runner writes it for every run whatever loggers are chosen
    (resume, `dlrun mode=compare` and curves.png read it), so this entry only names it in the group:
    `logger=[csv,tensorboard]` reads as what the run folder will hold."""

    def start(self, run_dir, config, data, sample=None, history=(), resumed_from=None) -> None:
        pass

    def log_epoch(self, row: dict, step: int, model: nn.Module) -> None:
        pass

    def finish(self, summary: dict) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard event file in run_dir/tensorboard/: every scalar of each epoch's row, weight
    histograms every `hist_every` epochs, the input grid once, and the hyperparameters with the best
    values at the end (HParams tab). `tensorboard --logdir outputs` shows all runs side by side."""

    def __init__(self, hist_every: int = 5, subdir: str = "tensorboard"):
        if int(hist_every) < 0:
            raise DlrunError(f"logger.tensorboard.hist_every must be >= 0 (0 = no histograms), got {hist_every}")
        need("torch.utils.tensorboard", "tensorboard", "tensorboard")
        self.hist_every, self.subdir = int(hist_every), subdir
        self.writer = None
        self.config: dict = {}

    def start(self, run_dir, config, data, sample=None, history=(), resumed_from=None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / self.subdir))
        self.config = config
        for row in history:  # a resumed run: its folder holds the whole history, as metrics.csv does
            self._scalars(row)
        self._samples(run_dir, data, sample)
        self.writer.add_text("config", "```\n" + "\n".join(f"{k}: {v}" for k, v in flatten(config).items()) + "\n```")
        self.writer.flush()

    def _scalars(self, row: dict) -> None:
        for k, v in scalars(row).items():
            self.writer.add_scalar(k, v, int(row["epoch"]))

    def _samples(self, run_dir: Path, data, sample) -> None:
        """The inputs as the net receives them: a make_grid of images, samples.png otherwise."""
        if data.modality == "image":
            from torchvision.utils import make_grid

            x = sample[0] if sample is not None else data.train.x[:32]
            grid = make_grid(x[:32].detach().float().cpu(), nrow=8, normalize=True)  # min-max to [0, 1]
            self.writer.add_image("samples", grid, 0)
        elif (Path(run_dir) / "samples.png").is_file():
            import matplotlib.image

            img = matplotlib.image.imread(Path(run_dir) / "samples.png")[..., :3]
            self.writer.add_image("samples", img, 0, dataformats="HWC")

    def log_epoch(self, row: dict, step: int, model: nn.Module) -> None:
        self._scalars(row)
        if self.hist_every and step % self.hist_every == 0:
            for name, p in model.named_parameters():
                w = p.detach().float().cpu()
                if torch.isfinite(w).all():  # a histogram of NaN/Inf has no range; the scalars show those
                    self.writer.add_histogram(name, w, step)
        self.writer.flush()  # the dashboard follows the run epoch by epoch

    def finish(self, summary: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        hp = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(self.config).items()}
        # distinct tags from the per-epoch scalars, else the HParams tab shows the last epoch's value
        metrics = {f"best/{k}": float(v) for k, v in scalars(summary.get("best") or {}).items()
                   if k not in ("lr", "time")}
        if metrics:
            fw = self.writer._get_file_writer()
            for s in hparams(hp, metrics):  # into this run's own event file, not a new sub-folder
                fw.add_summary(s)
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, int(summary.get("best_epoch") or 0))
        self.writer.close()


class MLflowLogger:
    """One MLflow run per dlrun run, in a local store (no server): the flattened config as params,
    each epoch's row as metrics with step = epoch, summary.json, curves.png and metrics.csv as
    artifacts, status FINISHED / FAILED / KILLED. A resumed run is a new MLflow run tagged
    `resumed_from` that carries the earlier epochs too."""

    def __init__(self, tracking_uri: str = "file:./mlruns", experiment: str = "dlrun"):
        need("mlflow", "mlflow", "mlflow")
        self.tracking_uri, self.experiment = resolve_uri(str(tracking_uri)), str(experiment)
        if self.tracking_uri.startswith("file:"):
            # MLflow 3 keeps the file store behind an opt-in; a local folder is what this logger is for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client, self.experiment_id = self._connect()  # a bad store fails here, before any work
        self.run_id: str | None = None
        self.run_dir: Path | None = None

    def _connect(self):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(self.tracking_uri)
            exp = client.get_experiment_by_name(self.experiment)
            return client, exp.experiment_id if exp else client.create_experiment(self.experiment)
        except MlflowException as e:
            raise DlrunError(f"logger.mlflow.tracking_uri={self.tracking_uri}: {str(e).strip().splitlines()[0]}") from None

    def start(self, run_dir, config, data, sample=None, history=(), resumed_from=None) -> None:
        from mlflow.entities import Param

        self.run_dir = Path(run_dir)
        tags = {"dlrun.run_dir": str(self.run_dir.resolve())}
        if resumed_from:
            tags["resumed_from"] = str(resumed_from)
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name(self.run_dir, config),
                                             tags=tags).info.run_id
        params = [Param(k, str(v)[:MLFLOW_PARAM_LEN]) for k, v in flatten(config).items()]
        for i in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MLFLOW_BATCH])
        for row in history:
            self._metrics(row)

    def _metrics(self, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(row["epoch"]))
                                                    for k, v in scalars(row).items()])

    def log_epoch(self, row: dict, step: int, model: nn.Module) -> None:
        self._metrics(row)

    def finish(self, summary: dict) -> None:
        for name in ("summary.json", "curves.png", "metrics.csv"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(summary.get("status"), "FAILED"))


def resolve_uri(uri: str) -> str:
    """`file:./mlruns` or a plain path -> an absolute file URI, fixed where dlrun was started;
    anything else (sqlite:///..., http://...) is MLflow's to interpret."""
    if uri.startswith("file:") and not uri.startswith("file:///"):
        return Path(uri[len("file:"):]).expanduser().resolve().as_uri()
    if "://" not in uri and ":" not in uri[:3]:  # a bare folder path (no scheme, not a Windows drive)
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def run_name(run_dir: Path, config: dict) -> str:
    """The run folder relative to out_dir (`2026-01-31/12-00-00`, `multirun/.../3`): a sweep's job
    folders are only numbers on their own."""
    try:
        return str(run_dir.resolve().relative_to(Path(str(config.get("out_dir", "outputs"))).resolve()))
    except ValueError:
        return run_dir.name


class Loggers:
    """The selected loggers, called in order; `finish` only after `start`."""

    def __init__(self, items: list[Logger]):
        self.items = items
        self.started = False

    def start(self, run_dir: Path, config: dict, data, sample=None, history=(), resumed_from=None) -> None:
        for lg in self.items:
            lg.start(run_dir, config, data, sample=sample, history=list(history), resumed_from=resumed_from)
        self.started = True

    def log_epoch(self, row: dict, step: int, model: nn.Module) -> None:
        for lg in self.items:
            lg.log_epoch(row, step, model)

    def finish(self, summary: dict) -> None:
        if self.started:
            self.started = False
            for lg in self.items:
                lg.finish(summary)
