"""The loop's numbers are right: epoch metrics, batches, resume, precision."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from dlrunner.modes import train as runner
from dlrunner.build import build_job, pick_device
from dlrunner.reporting.console import Reporter
from dlrunner.data.batches import TensorBatches, epoch_chunks
from dlrunner.data.core import Split
from dlrunner.engine.loop import Meter, TrainState, evaluate, train_epoch
from dlrunner.engine.precision import Precision

CPU = torch.device("cpu")


def full_pass(model, split, loss_fn):
    """Independent computation: the whole split in one forward, no batching."""
    model.eval()
    with torch.no_grad():
        out = model(split.x)
        return loss_fn(out, split.y).item(), (out.argmax(1) == split.y).float().mean().item()


def test_epoch_metrics_equal_an_independent_full_pass(make_cfg):
    job = build_job(make_cfg("data.fraction=0.3", "data.batch_size=7"), CPU, print)  # ragged last batch
    job.model(job.data.val.x[:2])
    res = evaluate(job.model, job.val, job.loss_fn, job.precision)
    loss, acc = full_pass(job.model, job.data.val, job.loss_fn)
    assert res["val/loss"] == pytest.approx(loss, rel=1e-5) and res["val/acc"] == pytest.approx(acc)
    # training metrics: with the LR at zero the weights stay put, so the running epoch loss
    # must equal the full pass over the training split (lenet has no dropout/BatchNorm)
    frozen = torch.optim.SGD(job.model.parameters(), lr=0.0)
    meter, state = Meter(CPU), TrainState()
    train_epoch(job.model, job.train, job.loss_fn, frozen, torch.optim.lr_scheduler.LambdaLR(frozen, lambda s: 1.0),
                job.precision, job.tricks,
                state, meter, lambda: False, lambda *a: None)
    loss, acc = full_pass(job.model, job.data.train, job.loss_fn)
    got = meter.result("train")
    assert meter.n == len(job.data.train)  # every sample counted once
    assert got["train/loss"] == pytest.approx(loss, rel=1e-5) and got["train/acc"] == pytest.approx(acc)


def test_batches_cover_each_sample_once_and_depend_on_seed_and_epoch():
    n = 101
    a = torch.cat(epoch_chunks(n, 10, True, 0, 0))
    assert sorted(a.tolist()) == list(range(n))
    assert torch.equal(a, torch.cat(epoch_chunks(n, 10, True, 0, 0)))
    assert not torch.equal(a, torch.cat(epoch_chunks(n, 10, True, 0, 1)))
    assert not torch.equal(a, torch.cat(epoch_chunks(n, 10, True, 1, 0)))
    assert min(len(c) for c in epoch_chunks(n, 10, True, 0, 0)) >= 2  # no batch of one (BatchNorm)
    split = Split(torch.arange(n).float()[:, None], torch.zeros(n, dtype=torch.long))
    tb = TensorBatches(split, 10, shuffle=True, seed=0, device=CPU)
    tail = [int(x[0, 0]) for _, (x, _) in tb.iterate(0, start=3)]
    assert tail == [int(c[0]) for c in epoch_chunks(n, 10, True, 0, 0)[3:]]  # resumes mid-epoch


def test_same_seed_same_metrics(make_cfg, tmp_path):
    rows = []
    for i in range(2):
        cfg = make_cfg("debug=smoke", "seed=3")
        runner.train(cfg, tmp_path / f"run{i}", {}, Reporter(live=False))
        rows.append((tmp_path / f"run{i}" / "metrics.csv").read_text().splitlines())
    strip = [[",".join(r.split(",")[:-1]) for r in rs] for rs in rows]  # drop the time column
    assert strip[0] == strip[1]


@pytest.mark.parametrize("stop_at, mid_epoch", [(30, True), (22, False)])  # 21 steps + 1 end-of-epoch check
def test_interrupted_run_resumes_to_the_same_metrics(make_cfg, tmp_path, sigterm_at, stop_at, mid_epoch):
    over = ("debug=smoke", "epochs=3", "data.batch_size=16", "seed=5")
    runner.train(make_cfg(*over), tmp_path / "straight", {}, Reporter(live=False))
    with sigterm_at(stop_at), pytest.raises(runner.Interrupted):
        runner.train(make_cfg(*over), tmp_path / "outputs" / "a", {}, Reporter(live=False))
    import json
    assert json.loads((tmp_path / "outputs" / "a" / "summary.json").read_text())["status"] == "interrupted"
    ck = torch.load(tmp_path / "outputs" / "a" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["state"]["batch"] > 0) == mid_epoch and ck["state"]["epoch"] == 1
    runner.train(make_cfg(*over, "resume=auto"), tmp_path / "outputs" / "b", {}, Reporter(live=False))
    straight = [r.rsplit(",", 1)[0] for r in (tmp_path / "straight" / "metrics.csv").read_text().splitlines()]
    resumed = [r.rsplit(",", 1)[0] for r in (tmp_path / "outputs" / "b" / "metrics.csv").read_text().splitlines()]
    assert resumed == straight
    assert json.loads((tmp_path / "outputs" / "b" / "resume.json").read_text())["resumed_from"].endswith("a")


def test_resume_auto_skips_completed_and_already_resumed_runs(make_cfg, tmp_path):
    from dlrunner.reporting.rundir import find_resumable
    cfg = make_cfg("debug=smoke", "epochs=1")
    runner.train(cfg, tmp_path / "outputs" / "done", {}, Reporter(live=False))
    assert find_resumable(tmp_path / "outputs", runner.config_key(cfg)) is None


def test_fp16_gradients_are_unscaled_before_clipping():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    true = model.weight.grad.clone()
    model.zero_grad()
    prec = Precision("fp16", CPU)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with prec.autocast():
        loss = nn.functional.cross_entropy(model(x), y)
    prec.backward(loss)
    assert model.weight.grad.abs().max() > 1000 * true.abs().max()  # scaled by 2**16
    prec.unscale(opt)
    assert torch.allclose(model.weight.grad, true, atol=1e-2)  # what a clip hook sees
    prec.step(opt)
    assert prec.state_dict()["scale"] > 0


def test_bf16_autocast_on_cpu_trains(make_cfg):
    job = build_job(make_cfg("debug=smoke", "trick=amp", "optim.lr=3e-3"), CPU, print)
    assert job.precision.name == "bf16-mixed"
    with job.precision.autocast():
        assert job.model(job.data.val.x[:4]).dtype == torch.bfloat16
    before = evaluate(job.model, job.val, job.loss_fn, job.precision)["val/loss"]
    for e in range(2):
        st = TrainState(epoch=e)
        train_epoch(job.model, job.train, job.loss_fn, job.optimizer, job.schedule, job.precision,
                    job.tricks, st, Meter(CPU), lambda: False, lambda *a: None)
    assert evaluate(job.model, job.val, job.loss_fn, job.precision)["val/loss"] < 0.7 * before


def test_device_choice():
    assert pick_device("cpu") == CPU
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_run_killed_during_its_end_of_run_work_resumes_to_a_complete_folder(make_cfg, tmp_path, monkeypatch):
    """Killed after its last epoch, before summary.json: resume=auto finds it and writes a complete
    folder (every epoch in metrics.csv, last.pt and best.pt, the pictures, summary.json) though nothing
    is left to train: best.pt can only come from the interrupted run (it carries over)."""
    import json
    import subprocess
    import sys
    over = ("debug=smoke", "epochs=2", "seed=1", "checkpoint_interval=0")
    runner.train(make_cfg(*over), tmp_path / "straight", {}, Reporter(live=False))

    def killed(*a, **k):
        raise KeyboardInterrupt  # as SIGKILL would stop it: nothing of the end-of-run work is written
    monkeypatch.setattr(runner, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.train(make_cfg(*over), tmp_path / "outputs" / "a", {}, Reporter(live=False))
    monkeypatch.undo()
    assert not (tmp_path / "outputs" / "a" / "summary.json").exists()
    owner = tmp_path / "outputs" / "a" / "checkpoints" / "owner.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner.write_text(json.dumps({**json.loads(owner.read_text()), "pid": int(dead.stdout)}))  # the killed process
    b = tmp_path / "outputs" / "b"
    runner.train(make_cfg(*over, "resume=auto"), b, {}, Reporter(live=False))
    for f in ("metrics.csv", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt", "curves.png",
              "samples.png", "confusion.png", "top_losses.png"):
        assert (b / f).is_file(), f
    straight = [r.rsplit(",", 1)[0] for r in (tmp_path / "straight" / "metrics.csv").read_text().splitlines()]
    resumed = [r.rsplit(",", 1)[0] for r in (b / "metrics.csv").read_text().splitlines()]
    assert resumed == straight
    s = json.loads((b / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs_run"] == 2
    best = torch.load(b / "checkpoints" / "best.pt", weights_only=True)
    assert best["state"]["best_epoch"] == json.loads((tmp_path / "straight" / "summary.json").read_text())["best_epoch"]


def test_a_run_still_being_trained_is_not_resumed_by_a_second_process(make_cfg, tmp_path):
    """Two terminals: `resume=auto` while the first process still trains the run is refused in one
    line; once that process is gone, the same command resumes it."""
    import json
    import subprocess
    import sys

    from dlrunner.errors import DlrunError
    over = ("debug=smoke", "epochs=2", "seed=2")
    with pytest.raises(KeyboardInterrupt):
        def stop(*a, **k):
            raise KeyboardInterrupt
        import unittest.mock as mock
        with mock.patch.object(runner, "finish", stop):
            runner.train(make_cfg(*over), tmp_path / "outputs" / "a", {}, Reporter(live=False))
    owner = tmp_path / "outputs" / "a" / "checkpoints" / "owner.json"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner.write_text(json.dumps({**json.loads(owner.read_text()), "pid": alive.pid}))
        with pytest.raises(DlrunError, match="still being trained by another process"):
            runner.train(make_cfg(*over, "resume=auto"), tmp_path / "outputs" / "b", {}, Reporter(live=False))
    finally:
        alive.kill()
        alive.wait()
    runner.train(make_cfg(*over, "resume=auto"), tmp_path / "outputs" / "c", {}, Reporter(live=False))
    assert json.loads((tmp_path / "outputs" / "c" / "summary.json").read_text())["status"] == "completed"
    assert json.loads(owner.read_text())["run_dir"] == str((tmp_path / "outputs" / "c").resolve())
