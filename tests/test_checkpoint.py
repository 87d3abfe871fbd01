"""Checkpoints are written atomically and bad files are refused with one clear line."""
from __future__ import annotations

import pytest
import torch

from dlrunner import checkpoint
from dlrunner.errors import DlrunError


def test_roundtrip_and_atomic_replace(tmp_path):
    p = tmp_path / "ck" / "last.pt"
    checkpoint.save({"model": {"w": torch.ones(3)}}, p)
    checkpoint.save({"model": {"w": torch.zeros(3)}}, p)
    assert torch.equal(checkpoint.load(p)["model"]["w"], torch.zeros(3))
    assert [f.name for f in p.parent.iterdir()] == ["last.pt"]  # no temporary left behind


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.ones(2)}}, p)

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save({"model": {"w": torch.zeros(2)}}, p)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(p)["model"]["w"], torch.ones(2))


def test_truncated_checkpoint(tmp_path):
    p = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.randn(1000)}}, p)
    p.write_bytes(p.read_bytes()[:1500])
    with pytest.raises(DlrunError, match="truncated") as e:
        checkpoint.load(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", ["foreign_torch", "text", "pickle"])
def test_foreign_files(tmp_path, content):
    p = tmp_path / "x.pt"
    if content == "foreign_torch":
        torch.save({"state_dict": {"w": torch.ones(1)}}, p)
        match = "not a dlrun checkpoint"
    elif content == "text":
        p.write_text("hello")
        match = "truncated or not a torch checkpoint"
    else:
        import pickle
        p.write_bytes(pickle.dumps(object()))
        match = "not a"
    with pytest.raises(DlrunError, match=match):
        checkpoint.load(p)


def test_missing(tmp_path):
    with pytest.raises(DlrunError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "nope.pt")
