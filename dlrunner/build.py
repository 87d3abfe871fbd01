"""Config -> objects. With cli.py, validate.py and modes/, the only code that reads the config; everything it
builds takes plain arguments."""
from __future__ import annotations

import functools
import importlib
import inspect
import os
import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from dlrunner.data.augment import make_augment
from dlrunner.data.batches import make_batches, place
from dlrunner.data.core import DataBundle, from_tensors
from dlrunner.errors import DlrunError
from dlrunner.engine.job import Job
from dlrunner.engine.batchsize import auto_batch_size
from dlrunner.engine.precision import PRECISIONS, Precision
from dlrunner.tricks.base import Trick, Tricks

DATA_KNOBS = ("fraction", "classes", "val_fraction", "test_fraction", "split_seed", "val_seed", "batch_size",
              "num_workers", "normalize", "augment", "flip")


def locate(path: str, group: str) -> Callable:
    """Import `pkg.module.name`; one clear line when it is not there."""
    mod_name, _, attr = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise DlrunError(f"{group}._target_: cannot import {path!r} ({e})") from None


def call(node: DictConfig | dict, group: str, note: Callable[[str], None] | None = None, **extra) -> Any:
    """Call a config node's `_target_` with its keys as flat arguments (plus `extra`).
    Keys the target does not accept (left over after `group._target_=your.Thing`) are dropped
    with a note, so a user's own class works without clearing the group's other keys."""
    node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    target = locate(node.pop("_target_", None) or "", group)
    partial = node.pop("_partial_", False)
    kwargs = {**node, **extra}
    params = inspect.signature(target).parameters
    if inspect.isclass(target) and issubclass(target, nn.Module) and target.__init__ is nn.Module.__init__:
        params = {}  # a Module without its own __init__ takes no arguments (Module's *args, **kwargs reject them)
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        dropped = [k for k in kwargs if k not in params and k not in extra]
        if dropped and note:
            note(f"{group}: {target.__name__} takes no {', '.join(dropped)}; ignoring them")
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return functools.partial(target, **kwargs) if partial else target(**kwargs)


@contextmanager
def building(group: str, choice: str | None = None) -> Iterator[None]:
    """The net under validation: whatever a constructor raises while the job is built (torch's
    `Dropout(p=1.5)`, a user's own class) becomes one line naming the config group, before any
    work. HYDRA_FULL_ERROR=1 keeps the traceback."""
    try:
        yield
    except DlrunError:
        raise
    except Exception as e:  # noqa: BLE001 - any constructor's error, reported as the group's
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        first = (str(e).strip().splitlines() or [""])[0].strip() or type(e).__name__
        where = f"{group} ({choice})" if choice else group
        raise DlrunError(f"{where}: {first[:300]}") from None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise DlrunError(f"device={name} but no CUDA device is available here; use device=auto or device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DlrunError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}") from None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_data(node: DictConfig, note: Callable[[str], None]) -> DataBundle:
    """The data group's target returns a DataBundle, or `(x, y)` arrays that get the standard
    split / subset / normalization treatment with the group's knobs."""
    if "on_device" in node:  # where batches are cut (build_job): not a data builder's concern
        node = node.copy()
        with open_dict(node):
            node.pop("on_device")
    out = call(node, "data", note=None)
    if isinstance(out, DataBundle):
        return out
    if isinstance(out, (tuple, list)) and len(out) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) for v in out)
        modality = {4: "image", 3: "sequence", 2: "tabular"}.get(x.dim())
        if modality is None or x.shape[0] != y.shape[0]:
            raise DlrunError(f"data._target_ returned x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}; "
                             "need x (N,C,H,W), (N,C,T) or (N,F) and y (N,) class ids")
        knobs = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in DATA_KNOBS}
        ids = np.asarray(y, dtype=np.int64)
        names = [str(i) for i in range(int(ids.max()) + 1)]
        return from_tensors(str(node._target_), x.float(), ids, names, modality, **knobs)
    raise DlrunError(f"data._target_ must return a DataBundle or (x, y); got {type(out).__name__}")


def build_model(node: DictConfig, data: DataBundle, note: Callable[[str], None]) -> nn.Module:
    node = OmegaConf.to_container(node, resolve=True)
    init_from = node.pop("init_from", None)
    model = call(node, "model", note=note, in_shape=tuple(data.in_shape), num_classes=data.num_classes)
    if not isinstance(model, nn.Module):
        raise DlrunError(f"model._target_ must build a torch.nn.Module; got {type(model).__name__}")
    if init_from:
        load_matching(model, init_from, note)
    return model


def load_matching(model: nn.Module, path: str, note: Callable[[str], None]) -> None:
    """Start from another run's weights (e.g. trained on other classes): every tensor whose name
    and shape match is loaded; the rest (typically the head) keeps its fresh init."""
    from dlrunner.engine import checkpoint
    saved = checkpoint.load(path)["model"]
    own = model.state_dict()
    match = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    if not match:
        raise DlrunError(f"model.init_from={path}: no tensor matches this model's names and shapes")
    model.load_state_dict(match, strict=False)
    fresh = [k for k in own if k not in match]
    note_fn = print if note is None else note
    note_fn(f"model.init_from: loaded {len(match)}/{len(own)} tensors from {path}"
            + (f"; fresh: {', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''}" if fresh else ""))
    model.dlrun_pretrained = f"weights from {path}"  # read by gradual_unfreezing


def build_tricks(node: DictConfig, schedule_name: str, precision: str, note: Callable[[str], None]) -> Tricks:
    items = []
    for key, sub in (node or {}).items():
        with building(f"trick.{key}"):
            t = call(sub, f"trick.{key}", note=note)
        if not isinstance(t, Trick):
            raise DlrunError(f"trick.{key}._target_ must build a dlrunner Trick; got {type(t).__name__}")
        items.append(t)
    owners = {}
    if schedule_name != "constant":
        owners["schedule"] = f"schedule={schedule_name}"
    if PRECISIONS.get(str(precision)):
        owners["precision"] = f"precision={precision}"
    return Tricks(items, owners)


def build_loggers(node: DictConfig | dict | None, note: Callable[[str], None] | None = None) -> Any:
    """The `logger` group (one key per selected logger) -> objects, as build_tricks does for tricks."""
    from dlrunner.reporting.loggers import Logger, Loggers

    items = []
    for key, sub in (node or {}).items():
        lg = call(sub, f"logger.{key}", note=note)
        if not isinstance(lg, Logger):
            raise DlrunError(f"logger.{key}._target_ must build a logger with start, log_epoch and finish; "
                             f"got {type(lg).__name__}")
        items.append(lg)
    return Loggers(items)


def fast_paths(model: nn.Module, modality: str, amp_dtype: str | None, device_type: str, tricks: set[str],
               deterministic: bool) -> tuple[bool, bool]:
    """(channels_last, cudnn.benchmark) for a CUDA job: NHWC for a conv net on images under mixed
    precision (tensor-core kernels without transposes); cuDNN's kernel search when shapes stay the
    same from step to step (not with progressive resizing) and results need not be reproducible."""
    if device_type != "cuda":
        return False, False
    convnet = any(isinstance(m, nn.Conv2d) for m in model.modules())
    nhwc = convnet and modality == "image" and amp_dtype is not None and "channels_last" not in tricks
    return nhwc, not deterministic and "progressive_resizing" not in tricks


def build_job(cfg: DictConfig, device: torch.device, note: Callable[[str], None],
              choices: dict[str, str] | None = None, train_on_val: bool = False) -> Job:
    """`choices`: Hydra's group selections (which schedule file was picked). `train_on_val`
    (mode=final): train on the union of the train and val splits; the test split is unchanged."""
    pick = (choices or {}).get
    tricks = build_tricks(cfg.trick, str(pick("schedule", "constant")), cfg.precision, note)
    auto_batch = str(OmegaConf.select(cfg, "data.batch_size", default="")) == "auto"
    data = job_data(cfg.data, auto_batch, train_on_val, pick("data"), note)
    seed_everything(int(cfg.seed), bool(cfg.deterministic))  # same weights whatever the data source did
    with building("model", pick("model")):
        model = tricks.setup(build_model(cfg.model, data, note).to(device))
    with building("loss", pick("loss")):
        loss_fn = call(cfg.loss, "loss", note=note)
    precision = tricks.first("precision", device) or Precision(PRECISIONS[str(cfg.precision)], device)
    model = with_fast_paths(model, data.modality, precision, device, tricks, bool(cfg.deterministic))
    if auto_batch:
        data.batch_size = auto_batch_size(model, loss_fn, data, precision, device, note)
    with building("optim", pick("optim")):
        make_optimizer = call(cfg.optim, "optim", note=note)
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    train, val, test = batch_sources(data, device, int(cfg.seed), OmegaConf.select(cfg, "data.on_device",
                                                                                   default="auto"))
    make_schedule = schedule_maker(cfg.schedule, tricks, int(cfg.epochs) * len(train), len(train),
                                   pick("schedule"), note)
    with building("schedule", pick("schedule")):
        schedule = make_schedule(optimizer)
    job = Job(data, model, loss_fn, optimizer, schedule, precision, tricks, device, train, val, test,
              int(cfg.epochs), make_optimizer, make_schedule)
    with building("trick"):
        tricks.bind(job)
    return job


def job_data(node: DictConfig, auto_batch: bool, train_on_val: bool, choice: str | None,
             note: Callable[[str], None]) -> DataBundle:
    """The data group's bundle; with data.batch_size=auto a placeholder batch size until the model
    exists (the data builders take a number), with train_on_val the val split joins train."""
    if auto_batch:
        node = node.copy()
        node.batch_size = 2
    with building("data", choice):
        data = build_data(node, note)
    return data.with_val_in_train() if train_on_val else data


def with_fast_paths(model: nn.Module, modality: str, precision: Precision, device: torch.device, tricks: Tricks,
                    deterministic: bool) -> nn.Module:
    """Switch on fast_paths(): cuDNN's kernel search, and channels_last as a trick of the job's."""
    nhwc, torch.backends.cudnn.benchmark = fast_paths(model, modality, precision.dtype, device.type,
                                                      {t.name for t in tricks}, deterministic)
    if not nhwc:
        return model
    from dlrunner.tricks.channels_last import ChannelsLast  # what trick=channels_last does, on by default where it pays

    layout = ChannelsLast()
    model = layout.setup(model)
    tricks.items.append(layout)
    return model


def batch_sources(data: DataBundle, device: torch.device, seed: int, on_device: Any) -> tuple[Any, Any, Any]:
    """The train, val and test batches, kept on the device when `data.on_device` says so (or auto
    finds they fit); the choice is recorded in data.extra for the run's summary."""
    aug = make_augment(data.modality, data.flip, data.in_shape) if data.augment else None
    resident, why = place(on_device, [data.train, data.val, data.test], device)
    data.extra["placement"] = {"on_device": resident, "why": why}
    mk = functools.partial(make_batches, seed=seed, device=device, num_workers=data.num_workers, on_device=resident)
    train = mk(data.train, data.batch_size, shuffle=True, augment=aug)
    val, test = (mk(s, max(data.batch_size, 256), shuffle=False) for s in (data.val, data.test))
    return train, val, test


def schedule_maker(node: DictConfig, tricks: Tricks, total: int, steps_per_epoch: int, choice: str | None,
                   note: Callable[[str], None]) -> Callable[[torch.optim.Optimizer], Any]:
    """optimizer -> its schedule over the run's `total` steps: a trick's that owns the schedule,
    else the configured one."""
    with building("schedule", choice):
        configured = call(node, "schedule", note=note)

    def make_schedule(opt: torch.optim.Optimizer):
        owned = tricks.first("schedule", opt, total, steps_per_epoch)
        return owned if owned is not None else configured(opt, total_steps=total, steps_per_epoch=steps_per_epoch)
    return make_schedule


def rebuild(ckpt: dict, device: str, note: Callable[[str], None]) -> Job:
    """A checkpoint's own job (its saved config: same data pipeline, model, tricks) on `device`,
    with its weights and its tricks' state loaded: what eval, predict and export start from."""
    saved = OmegaConf.create(ckpt["config"])
    saved.device = device
    job = build_job(saved, pick_device(str(device)), note, choices={})
    job.base_model.load_state_dict(ckpt["model"])
    job.tricks.load_state_dict(ckpt["tricks"])
    return job
