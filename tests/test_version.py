"""`dlrun --version`: dlrunner's version first, torch's and CUDA's, Hydra's after."""
from __future__ import annotations

from importlib import metadata

import torch


def test_version_lists_dlrunner_torch_cuda_then_hydra(dlrun):
    r = dlrun("--version", timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == f"dlrunner {metadata.version('dlrunner')}"
    assert lines[1] == f"torch {torch.__version__}"
    cuda = torch.version.cuda
    assert lines[2].startswith(f"CUDA {cuda} (") if cuda else lines[2] == "CUDA: none (a CPU-only torch build)"
    if cuda and torch.cuda.device_count() == 0:
        assert lines[2].endswith("(no GPU found)")
    assert lines[3] == f"Hydra {metadata.version('hydra-core')}" and len(lines) == 4
    assert not list(r.cwd.rglob("outputs"))  # nothing ran
