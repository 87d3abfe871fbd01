"""Checkpoints are written atomically and bad files are refused with one clear line."""
from __future__ import annotations

import pytest
import torch

from dlrunner.engine import checkpoint
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


def test_best_link_keeps_its_version_when_last_is_rewritten(tmp_path):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    checkpoint.save({"model": {"w": torch.ones(2)}}, last)
    checkpoint.link(last, best)
    checkpoint.save({"model": {"w": torch.zeros(2)}}, last)
    assert torch.equal(checkpoint.load(best)["model"]["w"], torch.ones(2))
    assert torch.equal(checkpoint.load(last)["model"]["w"], torch.zeros(2))


def test_checkpointer_defers_writes_but_loses_nothing_it_was_given(tmp_path):
    saver = checkpoint.Checkpointer(tmp_path, interval=1e9)
    w = torch.zeros(2)
    saver.epoch_end({"model": {"w": w}, "epoch": 1}, improved=True)
    w += 5  # training goes on and changes the live tensor
    saver.epoch_end({"model": {"w": w}, "epoch": 2}, improved=False)
    assert not (tmp_path / "last.pt").exists()  # nothing written yet: short epochs stay cheap
    saver.flush()  # end of run / crash / interrupt
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 2
    best = checkpoint.load(tmp_path / "best.pt")
    assert best["epoch"] == 1 and torch.equal(best["model"]["w"], torch.zeros(2))  # the snapshot, not the live tensor


def test_checkpointer_interval_zero_writes_every_epoch(tmp_path):
    saver = checkpoint.Checkpointer(tmp_path, interval=0)
    saver.epoch_end({"epoch": 1}, improved=True)
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 1 and (tmp_path / "best.pt").exists()
    saver.epoch_end({"epoch": 2}, improved=False)
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 2 and checkpoint.load(tmp_path / "best.pt")["epoch"] == 1
    saver.save_now({"epoch": 2, "batch": 7})
    assert checkpoint.load(tmp_path / "last.pt")["batch"] == 7
