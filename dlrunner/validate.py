"""Top-level config checks that run before anything is loaded: one line per problem."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dlrunner.conf_lists import CONF
from dlrunner.errors import DlrunError
from dlrunner.modes import MODES

METRICS = ("val/acc", "val/loss", "train/acc", "train/loss")
PLOTS = ("all", "end", "none")
EXPORT_FORMATS = ("torchscript", "onnx", "safetensors")  # mode=export; dlrunner.modes.export.FORMATS has their files


def _num(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


GROUPS = ("data", "model", "optim", "schedule", "loss")  # single-choice groups whose files declare flags


def validate(cfg: DictConfig, choices: dict[str, str] | None = None) -> None:
    """`choices`: Hydra's group selections, to find the files whose true/false keys are checked."""
    check_flags(cfg, choices or {})
    check_run(cfg)
    check_job(cfg)
    check_mode(cfg)


def check_run(cfg: DictConfig) -> None:
    """The keys that steer the run: mode, epochs, precision, metric, plots, logging, checkpoints."""
    from dlrunner.engine.precision import PRECISIONS

    if cfg.mode not in MODES:
        raise DlrunError(f"mode must be one of {', '.join(MODES)}; got {cfg.mode!r}")
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise DlrunError(f"epochs must be an integer >= 1, got {cfg.epochs!r}")
    stop_after = cfg.get("stop_after")
    if stop_after is not None and (not isinstance(stop_after, int) or isinstance(stop_after, bool) or stop_after < 1):
        raise DlrunError(f"stop_after must be null or an integer >= 1 (epochs), got {stop_after!r}")
    if str(cfg.precision) not in PRECISIONS:
        raise DlrunError(f"precision must be one of {', '.join(PRECISIONS)}; got {cfg.precision!r}")
    if cfg.optimized_metric not in METRICS:
        raise DlrunError(f"optimized_metric must be one of {', '.join(METRICS)}; got {cfg.optimized_metric!r}")
    if OmegaConf.select(cfg, "plots", default="all") not in PLOTS:
        raise DlrunError(f"plots must be one of {', '.join(PLOTS)}; got {cfg.plots!r}")
    if int(cfg.log_every) < 1:
        raise DlrunError(f"log_every must be >= 1, got {cfg.log_every}")
    if not isinstance(cfg.get("watch", True), bool) or not isinstance(cfg.get("watch_every", 1), int) \
            or cfg.get("watch_every", 1) < 1:
        raise DlrunError(f"watch must be true/false and watch_every an integer >= 1; got watch={cfg.get('watch')!r}, "
                         f"watch_every={cfg.get('watch_every')!r}")
    if float(cfg.checkpoint_interval) < 0:
        raise DlrunError(f"checkpoint_interval must be >= 0 seconds, got {cfg.checkpoint_interval}")


def check_job(cfg: DictConfig) -> None:
    """The job's own numbers (optimizer, model, data, seed, loss, devices) and the run it resumes."""
    lr = _num(cfg, "optim.lr")
    if lr is not None and not float(lr) > 0:
        raise DlrunError(f"optim.lr must be > 0, got {lr}")
    for key, low in (("model.width", 1), ("model.depth", 0)):
        v = _num(cfg, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise DlrunError(f"{key} must be an integer >= {low}, got {v!r}")
    for key in ("model.hidden", "model.heads", "model.ff_mult", "model.blocks"):
        v = _num(cfg, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise DlrunError(f"{key} must be an integer >= 1, got {v!r}")
    for key in ("data.split_seed", "data.val_seed"):
        v = _num(cfg, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise DlrunError(f"{key} must be an integer >= 0, got {v!r}")
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int) or cfg.seed < 0:
        raise DlrunError(f"seed must be an integer >= 0, got {cfg.get('seed')!r}")
    smooth = _num(cfg, "loss.label_smoothing")
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth < 1):
        raise DlrunError(f"loss.label_smoothing must be in [0, 1), got {smooth!r}")
    drop = _num(cfg, "model.dropout")
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1):
        raise DlrunError(f"model.dropout must be a probability in [0, 1), got {drop!r}")
    wd = _num(cfg, "optim.weight_decay")
    if wd is not None and (isinstance(wd, bool) or not isinstance(wd, (int, float)) or not wd >= 0):
        raise DlrunError(f"optim.weight_decay must be a number >= 0, got {wd!r}")
    frac = _num(cfg, "data.fraction")
    if frac is not None and not 0 < float(frac) <= 1:
        raise DlrunError(f"data.fraction must be in (0, 1], got {frac}")
    bs = _num(cfg, "data.batch_size")
    if bs is not None and bs != "auto" and (not isinstance(bs, int) or bs < 1):
        raise DlrunError(f"data.batch_size must be an integer >= 1 or auto, got {bs!r}")
    on_device = OmegaConf.select(cfg, "data.on_device", default="auto")
    if on_device not in ("auto", True, False):
        raise DlrunError(f"data.on_device must be auto, true or false; got {on_device!r}")
    devices = _num(cfg, "trainer.devices")
    if devices is not None:
        check_devices(cfg, devices)
    if cfg.resume not in (None, "auto") and not Path(str(cfg.resume)).expanduser().exists():
        raise DlrunError(f"resume={cfg.resume}: no such run folder or checkpoint")


def check_mode(cfg: DictConfig) -> None:
    """What the selected mode needs besides the job (a checkpoint, inputs, a format...)."""
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


def check_devices(cfg: DictConfig, devices) -> None:
    """trainer.devices: a count >= 1, at most the GPUs present on CUDA, train mode only, and no
    trick whose preparation is not coordinated across processes yet."""
    import os

    import torch

    from dlrunner.build import locate

    if not isinstance(devices, int) or devices < 1:
        raise DlrunError(f"trainer.devices must be an integer >= 1, got {devices!r}")
    torchrun = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    if devices == 1 and not torchrun:
        return
    if cfg.mode != "train":
        raise DlrunError(f"mode={cfg.mode} runs in one process; drop trainer.devices / torchrun")
    on_gpu = str(cfg.device) != "cpu" and torch.cuda.is_available()
    if on_gpu and not torchrun and devices > torch.cuda.device_count():
        raise DlrunError(f"trainer.devices={devices} but only {torch.cuda.device_count()} GPU(s) are visible")
    for name, node in (cfg.trick or {}).items():  # each trick class declares what it needs
        instead = getattr(locate(node.get("_target_", ""), f"trick.{name}"), "needs", {}).get("one process")
        if instead:
            raise DlrunError(f"trick={name} does not support several processes yet; {instead}")


def _flags(node, prefix: str):
    """(dotted key, ...) of every true/false value in a loaded config file."""
    for k, v in node.items():
        if k in ("defaults", "_target_"):
            continue
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, bool):
            yield key
        elif isinstance(v, dict):
            yield from _flags(v, key)


def check_flags(cfg: DictConfig, choices: dict[str, str]) -> None:
    """Keys that conf/ declares true/false take only true or false: `data.augment=maybe` is an
    error, not a silently truthy string. The files are conf/ itself: no list of flags to keep."""
    files = [("", CONF / "config.yaml")]
    files += [(g, CONF / g / f"{choices[g]}.yaml") for g in GROUPS if choices.get(g)]
    files += [("trick", CONF / "trick" / f"{name}.yaml") for name in (cfg.get("trick") or {})]
    for prefix, path in files:
        if not path.is_file():
            continue
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for key in _flags(raw, prefix):
            value = OmegaConf.select(cfg, key, default=None)
            if value is not None and not isinstance(value, bool):
                raise DlrunError(f"{key} must be true or false, got {value!r}")


def check_preset(config_dir: Path, name: str) -> None:
    """Compose `experiment=NAME` as dlrun would, so a broken preset is caught now, not at the next run."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from dlrunner.reporting.rundir import register_resolvers

    register_resolvers()
    extra = [] if config_dir.resolve() == CONF.resolve() else [f"hydra.searchpath=[file://{config_dir.resolve()}]"]
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={name}", *extra])
    except HydraException as e:
        raise DlrunError(f"the preset does not compose: {str(e).strip().splitlines()[0]}") from None
    validate(cfg)  # the values dlrun checks before any work
