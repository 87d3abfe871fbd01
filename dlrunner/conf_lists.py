"""Lists that conf/ is the registry of, for code that takes plain arguments and never sees the
composed config: the optimizers (one file each in conf/optim/) and the model ladders
(conf/ladder.yaml). A file added there is in these lists the day it lands."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parent.parent / "conf"


def names(group: str) -> list[str]:
    """The config names of a conf/ group (its files), sorted."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def node(group: str, name: str) -> dict[str, Any]:
    """One file of a conf/ group as a plain dict (`_target_` and its keys)."""
    return OmegaConf.to_container(OmegaConf.load(CONF / group / f"{name}.yaml"), resolve=True)


def ladders() -> dict[str, list[str]]:
    """Input modality -> model config names, simplest first (conf/ladder.yaml)."""
    return {str(k): [str(m) for m in v] for k, v in OmegaConf.to_container(OmegaConf.load(CONF / "ladder.yaml")).items()}
