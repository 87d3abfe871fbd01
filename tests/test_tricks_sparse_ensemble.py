"""dsd, prune and snapshot_ensemble do what their cards say, survive an interrupt, and refuse bad company."""
from __future__ import annotations

import json

import csv
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dlrunner.modes import train as runner

from dlrunner.engine import schedules
from dlrunner.build import build_job
from dlrunner.reporting.console import Reporter
from dlrunner.errors import DlrunError
from dlrunner.tricks.dsd import DSD
from dlrunner.tricks.prune import Prune, prunable
from dlrunner.tricks.snapshot_ensemble import SnapshotEnsemble

CPU = torch.device("cpu")
SMOKE = ("debug=smoke", "data.fraction=0.1", "data.batch_size=16", "seed=3", "checkpoint_interval=0")
STOP_IN_EPOCH_2 = 15  # 9 steps + 1 end-of-epoch check in epoch 1, then 5 steps into epoch 2


def rows(run_dir) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def straight_interrupted_resumed(make_cfg, tmp_path, monkeypatch, sigterm_at, *over: str):
    """A straight run, the same run stopped by SIGTERM in epoch 2, and its resumption. Returns the
    straight run's folder, the interrupted checkpoint and whether the resumed metrics are the same."""
    for name in ("samples", "curves"):  # pictures are not what these runs check; they cost seconds
        monkeypatch.setattr(runner.plots, name, lambda *a, **k: None)
    runner.train(make_cfg(*over), tmp_path / "straight", {}, Reporter(live=False))
    with sigterm_at(STOP_IN_EPOCH_2), pytest.raises(runner.Interrupted):
        runner.train(make_cfg(*over), tmp_path / "outputs" / "a", {}, Reporter(live=False))
    ck = torch.load(tmp_path / "outputs" / "a" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["state"]["epoch"], ck["state"]["batch"]) == (1, 5)
    runner.train(make_cfg(*over, "resume=auto"), tmp_path / "outputs" / "b", {}, Reporter(live=False))
    drop_time = [{k: v for k, v in r.items() if k != "time"} for r in rows(tmp_path / "straight")]
    same = drop_time == [{k: v for k, v in r.items() if k != "time"} for r in rows(tmp_path / "outputs" / "b")]
    return tmp_path / "straight", ck, same


def weight_zero_share(model_state: dict, names: list[str]) -> float:
    ws = [model_state[f"{n}.weight"] for n in names]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


# --- dsd ---------------------------------------------------------------------------------------

def test_dsd_resets_the_optimizer_keeps_the_lr_and_masks_stay_zero(make_cfg):
    job = build_job(make_cfg("debug=smoke", "epochs=3", "schedule=cosine", "optim.weight_decay=0.1",
                             "trick=dsd"), CPU, print)
    dsd, batches = next(iter(job.tricks)), [b for _, b in job.train.iterate(0)]

    def train(steps: int) -> None:
        for x, y in batches[:steps]:
            job.optimizer.zero_grad()
            job.loss_fn(job.model(x), y).backward()
            job.optimizer.step()
            job.schedule.step()
            dsd.after_step(job.model, 0)
    train(4)
    lr = job.optimizer.param_groups[0]["lr"]
    assert job.optimizer.state
    dsd.on_epoch_start(1)  # sparse phase: per-layer masks, no optimizer state, same LR
    assert not job.optimizer.state and job.optimizer.param_groups[0]["lr"] == lr
    layers = prunable(job.base_model)
    train(6)  # with weight decay and a fresh Adam state: masked parameters must not move
    for name, m in layers:
        assert m.weight_mask.mean().item() == pytest.approx(0.7, abs=0.01)
        assert (m.weight_orig[~dsd.masks[name]] == 0).all() and (m.weight[~dsd.masks[name]] == 0).all()
    total = 3 * job.steps_per_epoch  # cosine over the whole run, at step 10
    assert job.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 * 0.5 * (1 + math.cos(math.pi * 10 / total)))
    dsd.on_epoch_start(2)  # dense again: plain weights, fresh state, LR x0.1 on the same curve
    assert not any(hasattr(m, "weight_mask") for _, m in layers) and not job.optimizer.state
    train(1)
    assert job.optimizer.param_groups[0]["lr"] == pytest.approx(3e-5 * 0.5 * (1 + math.cos(math.pi * 11 / total)))


@pytest.mark.parametrize("schedule", ["onecycle", "step", "cosine", "sgdr"])
def test_dsd_lr_continues_then_drops_tenfold_per_group_under_any_schedule(schedule):
    kw = {"step": {"step_epochs": 1, "gamma": 0.5}, "sgdr": {"cycle_epochs": 1}}.get(schedule, {})
    curves = []
    for with_dsd in (False, True):
        torch.manual_seed(0)
        m = nn.Linear(3, 2)
        opt = torch.optim.SGD([{"params": [m.weight], "lr": 0.1}, {"params": [m.bias], "lr": 0.01}], momentum=0.9)
        job = SimpleNamespace(base_model=m, epochs=3, tricks=[], optimizer=opt,
                              schedule=getattr(schedules, schedule)(opt, 30, 10, **kw))
        dsd, lrs = DSD(), []
        dsd.bind(job)
        for epoch in range(3):
            if with_dsd:
                dsd.on_epoch_start(epoch)
            for _ in range(10):
                lrs.append([g["lr"] for g in job.optimizer.param_groups])  # both groups, discriminative LRs
                m(torch.randn(4, 3)).sum().backward()
                job.optimizer.step()
                job.optimizer.zero_grad()
                job.schedule.step()
        curves.append(torch.tensor(lrs))
    plain, dsd_lrs = curves
    assert torch.allclose(dsd_lrs[:20], plain[:20]) and torch.allclose(dsd_lrs[20:], 0.1 * plain[20:])


def test_dsd_phases_sparsity_redense_lr_and_resume(make_cfg, tmp_path, monkeypatch, sigterm_at):
    straight, ck, same = straight_interrupted_resumed(make_cfg, tmp_path, monkeypatch, sigterm_at, *SMOKE,
                                                      "epochs=3", "trick=dsd")
    r = rows(straight)
    assert [int(x["dsd/phase"]) for x in r] == [0, 1, 2]
    share = [float(x["dsd/sparsity"]) for x in r]
    assert share[0] < 0.01 and share[1] == pytest.approx(0.3, abs=0.02) and share[2] < 0.15
    lrs = [float(x["lr"]) for x in r]
    assert lrs[0] == lrs[1] == pytest.approx(3e-4) and lrs[2] == pytest.approx(3e-5)
    # interrupted 5 steps into the sparse phase: plain weights, zeros exactly where the masks say
    masks, names = ck["tricks"]["dsd"]["masks"], list(ck["tricks"]["dsd"]["masks"])
    assert ck["tricks"]["dsd"]["phase"] == 1 and not any(k.endswith("_orig") for k in ck["model"])
    assert all((ck["model"][f"{n}.weight"][~masks[n]] == 0).all() for n in names)
    assert weight_zero_share(ck["model"], names) == pytest.approx(0.3, abs=0.02)
    # the end: dense again, most pruned positions have grown back (a few feed dead units: no gradient)
    last = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    regrown = sum(int((last["model"][f"{n}.weight"][~masks[n]] != 0).sum()) for n in names)
    assert regrown > 0.6 * sum(int((~masks[n]).sum()) for n in names)
    assert same  # the resumed run re-applied the same masks and optimizer state


# --- prune -------------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_reaches_the_sparsity_and_keeps_the_surviving_weights(make_cfg, scope):
    job = build_job(make_cfg("debug=smoke", "trick=prune", f"trick.prune.scope={scope}",
                             "trick.prune.sparsity=0.6"), CPU, print)
    trick, layers = next(iter(job.tricks)), prunable(job.base_model)
    before = {n: m.weight.detach().clone() for n, m in layers}
    trick.on_epoch_start(0)
    assert not any(hasattr(m, "weight_mask") for _, m in layers)  # at_epoch defaults to half of 2 epochs
    trick.on_epoch_start(1)
    shares = []
    for n, m in layers:
        keep = trick.masks[n]
        assert torch.equal(m.weight[keep], before[n][keep]) and (m.weight[~keep] == 0).all()
        if scope == "layer":  # the smallest |w| of each layer went
            assert before[n][keep].abs().min() >= before[n][~keep].abs().max()
        shares.append((~keep).float().mean().item())
    assert trick.report()["prune/sparsity"] == pytest.approx(0.6, abs=1e-3)
    if scope == "global":  # one threshold: layers lose different shares
        kept = torch.cat([before[n][trick.masks[n]].abs() for n, _ in layers])
        gone = torch.cat([before[n][~trick.masks[n]].abs() for n, _ in layers])
        assert kept.min() >= gone.max() and max(shares) - min(shares) > 0.05
    else:
        assert all(s == pytest.approx(0.6, abs=0.01) for s in shares)


def test_prune_run_writes_plain_sparse_checkpoints_and_resumes(make_cfg, tmp_path, monkeypatch, sigterm_at):
    straight, ck, same = straight_interrupted_resumed(make_cfg, tmp_path, monkeypatch, sigterm_at, *SMOKE, "trick=prune")
    r = rows(straight)
    assert float(r[0]["prune/sparsity"]) < 0.01 and float(r[1]["prune/sparsity"]) == pytest.approx(0.5, abs=1e-3)
    names = list(ck["tricks"]["prune"]["masks"])
    assert len(names) == 5  # LeNet: 2 convs, 3 linears
    summary = json.loads((straight / "summary.json").read_text())
    for f in ("last.pt", "best.pt"):
        model = torch.load(straight / "checkpoints" / f, weights_only=True)["model"]
        assert not any(k.endswith(("_orig", "_mask")) for k in model)
        pruned = f == "last.pt" or summary["best_epoch"] == 2  # pruning starts with epoch 2
        assert weight_zero_share(model, names) == pytest.approx(0.5 if pruned else 0.0, abs=1e-3)
    report = summary["tricks"]["prune"]
    assert report["prune/sparsity"] == pytest.approx(0.5, abs=1e-3)  # the pruned checkpoint's sparsity, reported
    assert same


# --- snapshot_ensemble -------------------------------------------------------------------------

def lr_trace(trick: SnapshotEnsemble, total: int, lr0: float = 0.1) -> list[float]:
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr0)
    sched, out = trick.schedule(opt, total, 10), []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_snapshot_schedule_is_cosine_cycles_with_warm_restarts():
    lrs = lr_trace(SnapshotEnsemble(cycles=4), 40)
    assert lrs == pytest.approx([0.05 * (math.cos(math.pi * (t % 10) / 10) + 1) for t in range(40)])
    for start in (10, 20, 30):
        assert lrs[start] == pytest.approx(0.1) and lrs[start - 1] < 0.003  # back up at each restart
    lrs = lr_trace(SnapshotEnsemble(cycles=4), 42)  # T/M fractional: restarts on the snapshot steps
    assert [t for t in range(1, 42) if lrs[t] > lrs[t - 1]] == [10, 21, 31]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4)

    def forward(self, x):  # (B, 3) -> (B, 4)
        return self.bn(self.fc(x))


@pytest.mark.parametrize("weights,keep,expect", [("linear", None, [1, 2, 3, 4]), ("uniform", None, [1, 1, 1, 1]),
                                                 ("linear", 2, [3, 4]), ([0, 1, 0, 3], None, [0, 1, 0, 3])])
def test_snapshots_at_cycle_ends_and_weighted_softmax_average(weights, keep, expect):
    torch.manual_seed(0)
    live = Tiny()
    trick = SnapshotEnsemble(cycles=4, keep=keep, weights=weights)
    trick.schedule(torch.optim.SGD(live.parameters(), lr=0.1), 8, 2)
    trick.bind(SimpleNamespace(base_model=live))
    states = []
    for step in range(8):  # a different net (and BatchNorm statistics) after every step
        with torch.no_grad():
            for k, t in live.state_dict().items():
                if k == "bn.running_var":
                    t.mul_(torch.rand_like(t) + 0.5)  # stays positive
                elif t.is_floating_point():
                    t.add_(torch.randn_like(t))
        states.append({k: v.clone() for k, v in live.state_dict().items()})
        trick.after_step(live, step)
    assert trick.count == 4 and trick.numbers() == [1, 2, 3, 4][-len(expect):]
    ends = [states[s] for s in (1, 3, 5, 7)][-len(expect):]  # the last step of each cycle
    assert all(torch.equal(a[k], b[k]) for a, b in zip(trick.snapshots, ends) for k in a)
    x, frozen = torch.randn(5, 3), {k: v.clone() for k, v in live.state_dict().items()}
    live.eval()
    probs = []
    for s in ends:
        ref = Tiny().eval()
        ref.load_state_dict(s)
        probs.append(torch.softmax(ref(x), 1))
    w = torch.tensor(expect, dtype=torch.float32)
    hand = torch.log(sum(wi * p for wi, p in zip(w, probs)) / w.sum())
    assert torch.allclose(trick.predict(live, x), hand, atol=1e-5)
    assert all(torch.equal(live.state_dict()[k], frozen[k]) for k in frozen)  # the live model untouched


def test_snapshot_ensemble_run_takes_m_snapshots_and_resumes(make_cfg, tmp_path, monkeypatch, sigterm_at):
    straight, ck, same = straight_interrupted_resumed(make_cfg, tmp_path, monkeypatch, sigterm_at, *SMOKE,
                                                      "trick=snapshot_ensemble", "trick.snapshot_ensemble.cycles=2")
    r = rows(straight)
    assert [int(x["snapshot_ensemble/snapshots"]) for x in r] == [1, 2]
    assert float(r[0]["lr"]) == pytest.approx(3e-4) and float(r[1]["lr"]) == pytest.approx(0.0, abs=1e-12)
    assert "val/plain_acc" in r[0] and r[1]["val/acc"] != "" and ck["tricks"]["snapshot_ensemble"]["count"] == 1
    last = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    snaps = last["tricks"]["snapshot_ensemble"]["snapshots"]
    assert len(snaps) == 2 and all(torch.equal(snaps[-1][k], v) for k, v in last["model"].items())
    assert same  # the snapshot taken before the interrupt came back with the checkpoint


# --- refusals ----------------------------------------------------------------------------------

def test_bad_values_and_bad_company_are_refused_in_one_line(make_cfg):
    bad = [lambda: DSD(sparsity=1.2), lambda: DSD(dense_frac=0.5, redense_frac=0.5), lambda: Prune(scope="row"),
           lambda: Prune(sparsity=0), lambda: SnapshotEnsemble(cycles=0), lambda: SnapshotEnsemble(keep=5),
           lambda: SnapshotEnsemble(weights=[1, 2]), lambda: SnapshotEnsemble(weights="geometric"),
           lambda: build_job(make_cfg("debug=smoke", "trick=[dsd,prune]"), CPU, print),
           lambda: build_job(make_cfg("debug=smoke", "trick=[snapshot_ensemble,onecycle]"), CPU, print),
           lambda: build_job(make_cfg("debug=smoke", "trick=dsd"), CPU, print),  # 2 epochs: no sparse phase
           lambda: build_job(make_cfg("debug=smoke", "trick=prune", "trick.prune.at_epoch=2"), CPU, print),
           lambda: build_job(make_cfg("debug=smoke", "trick=[prune,ema]"), CPU, print)]
    msgs = []
    for make in bad:
        with pytest.raises(DlrunError) as e:
            make()
        msgs.append(str(e.value))
    assert all("\n" not in m for m in msgs)
    assert "trick=dsd conflicts with trick=prune" in msgs[8]
    assert "conflicts with trick=snapshot_ensemble: both set the schedule" in msgs[9]
    assert "trick=prune conflicts with trick=ema" in msgs[12]
