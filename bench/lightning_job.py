"""dlrun's job under PyTorch Lightning, for `make bench ARGS="--only lightning"` (needs the bench extra:
`pip install -e ".[bench]"`).

The model with its initial weights, the data tensors (split, normalized), the batch sizes and the
optimizer come from dlrun's own build (`dlrunner.build.build_job`, same config, same seed), so the
training loop is the only difference. Lightning runs with its defaults: a ModelCheckpoint (the last
epoch's weights and optimizer state, written every epoch), a CSV logger, validation every epoch,
fp32 ("32-true"), one device; only the progress bar and the model summary are off (dlrun prints one
line per epoch when its output is not a terminal, as in the benchmark).

Two ways to feed it: `loader="dataloader"`, what a Lightning user writes (a DataLoader over a
TensorDataset, shuffled), and `loader="dlrun"`, dlrun's own batches (tensors on the device, the same
seeded order per epoch) through Lightning's loop, which leaves the loop's own cost alone."""
from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # "GPU available: ..." lines
warnings.filterwarnings("ignore", ".*does not have many workers.*")  # num_workers=0, as in dlrun
warnings.filterwarnings("ignore", ".*(is smaller than the logging interval|LeafSpec).*")


class Classifier(L.LightningModule):
    """The job's model, loss and optimizer; per-epoch train/val loss and accuracy, as in metrics.csv."""

    def __init__(self, model: torch.nn.Module, loss_fn, make_optimizer):
        super().__init__()
        self.model, self.loss_fn, self.make_optimizer = model, loss_fn, make_optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        out = self.model(x)
        loss = self.loss_fn(out, y)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{split}/acc", (out.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.model.parameters())


class Epochs:
    """dlrun's batches (TensorBatches) as a plain iterable, in the order of the trainer's current epoch
    (Lightning also calls iter() once to check the iterable before the first epoch)."""

    def __init__(self, batches, epoch: Callable[[], int]):
        self.batches, self.epoch = batches, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return (batch for _, batch in self.batches.iterate(self.epoch()))


class Data(L.LightningDataModule):
    """The job's train and val splits, through a DataLoader or through dlrun's own batches."""

    def __init__(self, job: Any, loader: str):
        super().__init__()
        if loader not in ("dataloader", "dlrun"):
            raise ValueError(f"loader must be dataloader or dlrun, got {loader!r}")
        self.job, self.loader = job, loader

    def train_dataloader(self):
        if self.loader == "dlrun":
            return Epochs(self.job.train, lambda: self.trainer.current_epoch)
        d = self.job.data
        return DataLoader(TensorDataset(d.train.x, d.train.y), batch_size=d.batch_size, shuffle=True)

    def val_dataloader(self):
        if self.loader == "dlrun":
            return Epochs(self.job.val, lambda: 0)
        d = self.job.data
        return DataLoader(TensorDataset(d.val.x, d.val.y), batch_size=max(d.batch_size, 256))  # as dlrun's val


class EpochStarts(Callback):
    """When each training epoch starts (bench/measure.steady turns these into epoch times)."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())


def fit(job: Any, epochs: int, run_dir: Path, loader: str = "dataloader") -> tuple[list[float], float]:
    """Train the job's model for `epochs` under Lightning in run_dir; (epoch start times, final val acc)."""
    stamps = EpochStarts()
    trainer = L.Trainer(accelerator="gpu" if job.device.type == "cuda" else "cpu", devices=1, max_epochs=epochs,
                        precision="32-true", logger=CSVLogger(run_dir), default_root_dir=run_dir,
                        callbacks=[stamps], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Classifier(job.model, job.loss_fn, job.make_optimizer), datamodule=Data(job, loader))
    return stamps.starts, float(trainer.callback_metrics["val/acc"])
