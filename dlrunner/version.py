"""`dlrun --version`: dlrunner's version, then torch's with its CUDA, then Hydra's (what a bug report needs).

Hydra's own `--version` prints only Hydra's; the console script answers the flag before Hydra sees it.
torch is imported here, when the flag is given, and never by cli.py itself.
"""
from __future__ import annotations

from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cuda_line() -> str:
    """CUDA as torch sees it: the toolkit it was built with and the devices it finds."""
    import torch

    if not torch.version.cuda:
        return "CUDA: none (a CPU-only torch build)"
    n = torch.cuda.device_count()
    found = f"{n} GPU{'s' if n > 1 else ''}: {torch.cuda.get_device_name(0)}" if n else "no GPU found"
    return f"CUDA {torch.version.cuda} ({found})"


def version_text() -> str:
    import torch

    return "\n".join([f"dlrunner {_version('dlrunner')}", f"torch {torch.__version__}", cuda_line(),
                      f"Hydra {_version('hydra-core')}"])
