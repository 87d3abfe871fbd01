"""Top-level config checks that run before anything is loaded: one line per problem."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dlrunner.errors import DlrunError

MODES = ("train", "eval", "lr_find", "doctor", "compare", "predict", "export", "climb", "final")
METRICS = ("val/acc", "val/loss", "train/acc", "train/loss")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
EXPORT_FORMATS = ("torchscript", "onnx", "safetensors")  # mode=export; dlrunner.export.FORMATS has their files


def _num(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def validate(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise DlrunError(f"mode must be one of {', '.join(MODES)}; got {cfg.mode!r}")
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise DlrunError(f"epochs must be an integer >= 1, got {cfg.epochs!r}")
    if str(cfg.precision) not in PRECISIONS:
        raise DlrunError(f"precision must be one of {', '.join(PRECISIONS)}; got {cfg.precision!r}")
    if cfg.optimized_metric not in METRICS:
        raise DlrunError(f"optimized_metric must be one of {', '.join(METRICS)}; got {cfg.optimized_metric!r}")
    if int(cfg.log_every) < 1:
        raise DlrunError(f"log_every must be >= 1, got {cfg.log_every}")
    if float(cfg.checkpoint_interval) < 0:
        raise DlrunError(f"checkpoint_interval must be >= 0 seconds, got {cfg.checkpoint_interval}")
    lr = _num(cfg, "optim.lr")
    if lr is not None and not float(lr) > 0:
        raise DlrunError(f"optim.lr must be > 0, got {lr}")
    frac = _num(cfg, "data.fraction")
    if frac is not None and not 0 < float(frac) <= 1:
        raise DlrunError(f"data.fraction must be in (0, 1], got {frac}")
    bs = _num(cfg, "data.batch_size")
    if bs is not None and int(bs) < 1:
        raise DlrunError(f"data.batch_size must be >= 1, got {bs}")
    if cfg.resume not in (None, "auto") and not Path(str(cfg.resume)).expanduser().exists():
        raise DlrunError(f"resume={cfg.resume}: no such run folder or checkpoint")
    if cfg.mode == "eval":
        if not cfg.ckpt:
            raise DlrunError("mode=eval needs ckpt=PATH (a checkpoint file or a run folder)")
        if cfg.split not in ("val", "test"):
            raise DlrunError(f"split must be val or test; got {cfg.split!r}")
    if cfg.mode in ("predict", "export") and not OmegaConf.select(cfg, "ckpt", default=None):
        raise DlrunError(f"mode={cfg.mode} needs ckpt=PATH (a checkpoint file or a run folder)")
    if cfg.mode == "predict" and not OmegaConf.select(cfg, "input", default=None):
        raise DlrunError("mode=predict needs input=PATH (a file, a quoted glob such as 'imgs/*.png', or a folder)")
    if cfg.mode == "climb":
        gain = OmegaConf.select(cfg, "climb.min_gain", default=None)
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain >= 0:
            raise DlrunError(f"climb.min_gain must be a number >= 0 (a gain in {cfg.optimized_metric}), got {gain!r}")
    if cfg.mode == "export":
        fmt = OmegaConf.select(cfg, "format", default=None)
        if fmt not in EXPORT_FORMATS:
            raise DlrunError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
