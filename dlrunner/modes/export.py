"""`dlrun mode=export ckpt=PATH format=torchscript|onnx|safetensors`: the trained network as a file
other programs load without dlrunner's training code.

  torchscript  model.ts           torch.jit.load(path)
  onnx         model.onnx         onnxruntime.InferenceSession(path); input "input" (N, *in_shape), output "logits"
  safetensors  model.safetensors  the state_dict; model.json beside it holds the model config and data
                                  meta, and `load_safetensors(path)` rebuilds the module from both

preprocessing.json goes beside every artifact: the mean / std (the model takes (raw - mean) / std),
in_shape, class_names and modality. After writing, the artifact is loaded back with its own loader
and must reproduce the checkpoint model's logits on a validation batch.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dlrunner.engine import checkpoint
from dlrunner.reporting.analysis import split_inputs
from dlrunner.reporting.console import Reporter
from dlrunner.reporting.files import write_json
from dlrunner.errors import DlrunError
from dlrunner.modes import ModeRun
from dlrunner.modes.predict import expectation, rebuild
from dlrunner.tricks.base import Trick

if TYPE_CHECKING:
    from dlrunner.engine.job import Job

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx", "safetensors": "model.safetensors"}
TOLERANCE = 1e-4  # max |logit difference| accepted between the artifact and the checkpoint model
CHECK_SAMPLES = 64  # validation samples the round trip is checked on
SIDECAR_FORMAT = "dlrunner-safetensors/1"


def _need(module: str, fmt: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise DlrunError(f"format={fmt} needs the {module} package: pip install 'dlrunner[export]'") from None


def network(job: Job, note: Callable[[str], None]) -> nn.Module:
    """The single network the checkpoint evaluates with: averaged weights (EMA, SWA) when a trick
    keeps them, else the trained model; in eval mode, on the CPU."""
    net = job.base_model
    if job.full_model is None:
        averaged = job.tricks.first("eval_model", net)
        net = net if averaged is None else averaged
    replaced = [t.name for t in job.tricks if type(t).predict is not Trick.predict]
    if replaced:
        note(f"trick={replaced[0]}'s predictions (test-time augmentation, ensembles) are not part of the export; "
             "the artifact is the single network")
    return net.cpu().eval()  # the dtype it was trained in (trick=half keeps bf16/fp16 weights and casts inputs)


def check_batch(job: Job) -> torch.Tensor:
    """Normalized validation inputs, as the whole network takes them."""
    n = min(CHECK_SAMPLES, len(job.data.val))
    return split_inputs(job.data.val, list(range(n))).float().cpu()


def preprocessing(meta: dict) -> dict:
    return {"name": meta["name"], "modality": meta["modality"], "in_shape": list(meta["in_shape"]),
            "class_names": list(meta["class_names"]), "features": list(meta.get("features") or []),
            "mean": torch.as_tensor(meta["mean"]).float().tolist(), "std": torch.as_tensor(meta["std"]).float().tolist(),
            "input": f"x = (raw - mean) / std per {'feature' if meta['modality'] == 'tabular' else 'channel'}; "
                     f"raw: {expectation(meta)}", "output": "logits (N, K): softmax for probabilities"}


# --- writers and their loaders -------------------------------------------------------------------

def write_torchscript(net: nn.Module, example: torch.Tensor, path: Path, ckpt: dict) -> None:
    with warnings.catch_warnings():  # torch marks jit as deprecated; its files still load everywhere
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(net, example, check_trace=False)
        except Exception as e:  # tracing raises RuntimeError/TypeError by model
            raise DlrunError(f"format=torchscript: tracing {type(net).__name__} failed ({str(e).splitlines()[0][:150]})") from None
        torch.jit.save(traced, str(path))


def load_torchscript(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return lambda x: module(x)


def write_onnx(net: nn.Module, example: torch.Tensor, path: Path, ckpt: dict) -> None:
    _need("onnx", "onnx")
    _need("onnxscript", "onnx")  # torch's dynamo-based exporter translates through it
    batch = torch.export.Dim("batch", min=1)
    # one self-contained file unless the weights exceed protobuf's 2 GB limit
    external = sum(p.numel() * p.element_size() for p in net.parameters()) > 1.5e9
    errors = []
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [q.level for q in quiet]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q in quiet:  # their progress notes would reach the console through Hydra's logging setup
            q.setLevel(logging.WARNING)
        try:
            for kwargs in ({"dynamo": True, "dynamic_shapes": ({0: batch},), "external_data": external},
                           {"dynamo": False, "dynamic_axes": {"input": {0: "batch"}, "logits": {0: "batch"}}}):
                try:  # the exporter from torch.export first; the TorchScript-based one for models it cannot take
                    torch.onnx.export(net, (example,), str(path), input_names=["input"], output_names=["logits"],
                                      verbose=False, **kwargs)
                    return
                except Exception as e:  # noqa: BLE001 - each exporter fails in its own way
                    errors.append(str(e).strip().splitlines()[0][:150] if str(e).strip() else type(e).__name__)
        finally:
            for q, level in zip(quiet, levels):
                q.setLevel(level)
    raise DlrunError(f"format=onnx: exporting {type(net).__name__} failed ({'; '.join(errors)})")


def load_onnx(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    _need("onnxruntime", "onnx")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _tensor_at(net: nn.Module, key: str) -> torch.Tensor:
    """A state_dict entry by attribute path, so a pruned layer gives its effective (masked) weight
    under the plain name a fresh model has."""
    obj = net
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def plain_model(model_node: dict, meta: dict) -> nn.Module:
    """The configured network, freshly built for the checkpoint's inputs and classes (no tricks)."""
    from dlrunner.build import build_model
    from dlrunner.data.core import DataBundle

    stand_in = DataBundle(meta["name"], [], [], [], list(meta["class_names"]), meta["modality"],
                          tuple(meta["in_shape"]), torch.as_tensor(meta["mean"]), torch.as_tensor(meta["std"]))
    return build_model(OmegaConf.create(model_node), stand_in, note=lambda msg: None)


def write_safetensors(net: nn.Module, example: torch.Tensor, path: Path, ckpt: dict) -> None:
    _need("safetensors", "safetensors")
    from safetensors.torch import save_file

    cfg = OmegaConf.create(ckpt["config"])
    node = OmegaConf.to_container(cfg.model, resolve=True)
    node["init_from"] = None  # the weights come from the file, not from another run
    if "pretrained" in node:
        node["pretrained"] = False  # nor from a download
    keys = plain_model(node, ckpt["data"]).state_dict().keys()
    try:
        state = {k: _tensor_at(net, k).detach().cpu().contiguous().clone() for k in keys}
    except AttributeError as e:
        raise DlrunError(f"format=safetensors: the trained model has no tensor {e.name!r} of the plain model") from None
    save_file(state, str(path), metadata={"format": SIDECAR_FORMAT})
    meta = preprocessing(ckpt["data"])
    sidecar = {"format": SIDECAR_FORMAT, "model": node, "data": meta, "config": ckpt["config"],
               "class": type(net).__name__}
    write_json(sidecar, path.with_suffix(".json"))


def load_safetensors(path: str | Path) -> nn.Module:
    """Rebuild the network from model.safetensors and the model.json beside it."""
    from safetensors.torch import load_file

    path = Path(path)
    side = path.with_suffix(".json")
    if not side.is_file():
        raise DlrunError(f"{path.name}: no {side.name} beside it (the model config and data meta)")
    sidecar = json.loads(side.read_text())
    model = plain_model(sidecar["model"], sidecar["data"])
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def _load_safetensors(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    model = load_safetensors(path)
    return lambda x: model(x)


WRITERS = {"torchscript": (write_torchscript, load_torchscript), "onnx": (write_onnx, load_onnx),
           "safetensors": (write_safetensors, _load_safetensors)}


def check(fmt: str, path: Path, reference: torch.Tensor, x: torch.Tensor) -> float:
    """Max |logit difference| between the artifact (loaded with its own loader) and the checkpoint."""
    try:
        with torch.no_grad():
            got = WRITERS[fmt][1](path)(x).float()
    except DlrunError:
        raise
    except Exception as e:  # noqa: BLE001 - a runtime that cannot load or run the file: one line
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise DlrunError(f"format={fmt}: {path} was written but does not load back and run ({first})") from None
    if got.shape != reference.shape:
        raise DlrunError(f"format={fmt}: {path.name} returns shape {tuple(got.shape)}, the checkpoint {tuple(reference.shape)}")
    return float((got - reference).abs().max())


def export(cfg: DictConfig, run_dir: Path, out: Reporter) -> float:
    """mode=export: write the artifact and preprocessing.json into run_dir; returns the max logit
    difference measured on a validation batch."""
    fmt = str(cfg.format)
    ckpt = checkpoint.load(cfg.ckpt)
    job = rebuild(ckpt, str(cfg.device), out.warn)
    net = network(job, out.warn)
    x = check_batch(job)
    with torch.no_grad():
        reference = net(x).float()
    path = Path(run_dir) / FORMATS[fmt]
    WRITERS[fmt][0](net, x[:2], path, ckpt)
    write_json(preprocessing(ckpt["data"]), Path(run_dir) / "preprocessing.json")
    diff = check(fmt, path, reference, x)
    if not diff <= TOLERANCE:  # also catches NaN
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in net.parameters()} - {"float32"})
        hint = f"; its weights are {', '.join(dtypes)} (trick=half): format=torchscript keeps its casts" if dtypes else ""
        raise DlrunError(f"format={fmt}: {path} does not reproduce the checkpoint: max |logit difference| "
                         f"{diff:.3g} on {len(x)} validation samples (tolerance {TOLERANCE:g}){hint}")
    out.info(f"export: {checkpoint.resolve(cfg.ckpt)} -> {path} ({fmt}); preprocessing.json beside it")
    out.info(f"check: max |logit difference| {diff:.2e} on {len(x)} validation samples (tolerance {TOLERANCE:g})")
    return diff


def run(job: ModeRun) -> float:
    return export(job.cfg, job.run_dir, job.out)
