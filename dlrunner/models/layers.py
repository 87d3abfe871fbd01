"""Small shared pieces: activation lookup, input modality, and the model ladders (conf/ladder.yaml)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from dlrunner.errors import DlrunError

ACTIVATIONS = ("relu", "gelu", "tanh", "leaky_relu", "silu", "elu", "sigmoid")


def activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` (one of ``ACTIVATIONS``)."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "tanh":
        return nn.Tanh()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01)
    if name == "silu":
        return nn.SiLU()
    if name == "elu":
        return nn.ELU()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise DlrunError(f"unknown activation act={name!r}; choose one of: {', '.join(ACTIVATIONS)}")


def as_shape(in_shape: Sequence[int]) -> tuple[int, ...]:
    """Normalise a shape given as tuple, list or OmegaConf ListConfig to a tuple of ints."""
    return tuple(int(s) for s in in_shape)


def modality(in_shape: Sequence[int]) -> str:
    """Name the modality implied by a per-sample shape (batch dimension excluded)."""
    shape = as_shape(in_shape)
    kinds = {3: "image", 2: "sequence", 1: "tabular"}
    if len(shape) not in kinds:
        raise DlrunError(
            f"cannot handle input of shape {shape}: expected (C,H,W) images, "
            "(C,T) sequences or (F,) tabular features"
        )
    return kinds[len(shape)]


def ladder(kind: str) -> list[str]:
    """Model config names for a modality, simplest first: climb only when a rung underfits."""
    from dlrunner.conf_lists import ladders as read_ladders

    ladders = read_ladders()  # conf/ladder.yaml
    if kind not in ladders:
        raise DlrunError(f"unknown modality {kind!r}; choose one of: {', '.join(ladders)}")
    return list(ladders[kind])


def expect_modality(in_shape: Sequence[int], wanted: str, model: str) -> tuple[int, ...]:
    """Check the data suits ``model``; return the shape as a tuple of ints.

    Raises a one-line DlrunError that names the models which do fit the data.
    """
    shape = as_shape(in_shape)
    got = modality(shape)
    described = {
        "image": "images (C,H,W)",
        "sequence": "sequences (C,T)",
        "tabular": "tabular features (F,)",
    }
    if got != wanted:
        raise DlrunError(
            f"model={model} expects {described[wanted]} but the data gives {got} input "
            f"of shape {shape}; try model=auto or one of: {', '.join(ladder(got))}"
        )
    return shape
