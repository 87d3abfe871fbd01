"""Every value a user can get wrong in conf/: one `dlrun: error:` line naming the key, before any
work. The same table is the README's "Bad input" list."""
from __future__ import annotations

import pytest
import torch

from dlrunner.build import build_job, pick_device
from dlrunner.errors import DlrunError
from dlrunner.validate import validate

CPU = torch.device("cpu")
DEFAULTS = {"data": "digits", "model": "lenet", "optim": "adamw", "schedule": "constant", "loss": "cross_entropy"}

CASES = [
    (['data.size=4'], 'data.size must be >= 8'),
    (['data.test_fraction=1.5'], 'data.test_fraction must be in [0, 1)'),
    (['data.fraction=0'], 'data.fraction must be in (0, 1]'),
    (['data.classes=[3]'], 'data.classes needs at least two distinct classes'),
    (['data.val_fraction=1.0'], 'data.val_fraction must be in (0, 1)'),
    (['data.batch_size=0'], 'data.batch_size must be an integer >= 1 or auto'),
    (['data.num_workers=-1'], 'data.num_workers must be >= 0'),
    (['data.on_device=maybe'], 'data.on_device must be auto, true or false'),
    (['data.normalize=maybe'], 'data.normalize must be true or false'),
    (['data.augment=maybe'], 'data.augment must be true or false'),
    (['data.split_seed=-1'], 'data.split_seed must be an integer >= 0'),
    (['data.val_seed=1.5'], 'data.val_seed must be an integer >= 0'),
    (['data=mnist1d', 'model=conv1d', 'data.num_samples=10'], 'data.num_samples must be >= 100'),
    (['data=tabular', 'model=mlp', 'data.name=iris'], 'data.name must be one of wine, breast_cancer, csv'),
    (['model.width=0'], 'model.width must be an integer >= 1'),
    (['model.depth=-1'], 'model.depth must be an integer >= 0'),
    (['model.act=swish'], "unknown activation act='swish'"),
    (['model.init=xavier'], "unknown init='xavier'"),
    (['model.dropout=1.0'], 'model.dropout must be a probability in [0, 1)'),
    (['model.hidden=0'], 'model.hidden must be an integer >= 1'),
    (['model=resnet', 'model.blocks=0'], 'model.blocks must be an integer >= 1'),
    (['model=resnet', 'model.downsample=avg'], "unknown model.downsample='avg'"),
    (['model=resnet', 'model.head=none'], "unknown model.head='none'"),
    (['model=resnet', 'model.act_position=middle'], "unknown model.act_position='middle'"),
    (['model=resnet', 'model.bias=maybe'], "unknown model.bias='maybe'"),
    (['model=resnet', 'model.separable=maybe'], 'model.separable must be true or false'),
    (['data=mnist1d', 'model=transformer', 'model.heads=3'], 'model.width=64 must be divisible by model.heads=3'),
    (['data=mnist1d', 'model=transformer', 'model.ff_mult=0'], 'model.ff_mult must be an integer >= 1'),
    (['data=mnist1d', 'model=lstm', 'model.bidirectional=maybe'], 'model.bidirectional must be true or false'),
    (['model.init_from=/nope'], 'no checkpoint at /nope'),
    (['optim.lr=0'], 'optim.lr must be > 0'),
    (['optim.beta1=1.0'], 'optim.beta1 must be in [0, 1)'),
    (['optim.beta2=-0.1'], 'optim.beta2 must be in [0, 1)'),
    (['optim.eps=-1'], 'optim (adamw): Invalid epsilon value: -1'),
    (['optim.weight_decay=-1'], 'optim.weight_decay must be a number >= 0'),
    (['optim=sgd', 'optim.momentum=1.5'], 'optim.momentum must be in [0, 1)'),
    (['optim=sgd', 'optim.nesterov=maybe'], 'optim.nesterov must be true or false'),
    (['schedule=cosine', 'schedule.eta_min=-1'], 'cosine needs eta_min >= 0 and warmup_epochs >= 0'),
    (['schedule=cosine', 'schedule.warmup_epochs=-1'], 'cosine needs eta_min >= 0 and warmup_epochs >= 0'),
    (['schedule=onecycle', 'schedule.pct_start=1.5'], 'onecycle pct_start must be in (0, 1)'),
    (['schedule=onecycle', 'schedule.div_factor=0'], 'onecycle div_factor and final_div_factor must be > 0'),
    (['schedule=onecycle', 'schedule.final_div_factor=0'], 'onecycle div_factor and final_div_factor must be > 0'),
    (['schedule=onecycle', 'schedule.max_lr=-1'], 'onecycle max_lr must be > 0'),
    (['schedule=onecycle', 'schedule.base_momentum=0.99'], 'onecycle needs 0 <= base_momentum <= max_momentum < 1'),
    (['schedule=sgdr', 'schedule.cycle_epochs=0'], 'sgdr needs cycle_epochs > 0, an integer cycle_mult >= 1 and eta_min >= 0'),
    (['schedule=sgdr', 'schedule.cycle_mult=0'], 'sgdr needs cycle_epochs > 0, an integer cycle_mult >= 1 and eta_min >= 0'),
    (['schedule=sgdr', 'schedule.eta_min=-1'], 'sgdr needs cycle_epochs > 0, an integer cycle_mult >= 1 and eta_min >= 0'),
    (['schedule=step', 'schedule.step_epochs=0'], 'step schedule needs step_epochs > 0 and gamma in (0, 1]'),
    (['schedule=step', 'schedule.gamma=0'], 'step schedule needs step_epochs > 0 and gamma in (0, 1]'),
    (['schedule=step', 'schedule.gamma=2'], 'step schedule needs step_epochs > 0 and gamma in (0, 1]'),
    (['loss.label_smoothing=1.0'], 'loss.label_smoothing must be in [0, 1)'),
    (['epochs=0'], 'epochs must be an integer >= 1'),
    (['seed=-1'], 'seed must be an integer >= 0'),
    (['seed=abc'], 'seed must be an integer >= 0'),
    (['device=gpu'], 'device must be auto, cpu, cuda or cuda:N'),
    (['precision=64'], 'precision must be one of 32, bf16-mixed, 16-mixed'),
    (['optimized_metric=acc'], 'optimized_metric must be one of val/acc, val/loss, train/acc, train/loss'),
    (['checkpoint_interval=-1'], 'checkpoint_interval must be >= 0 seconds'),
    (['log_every=0'], 'log_every must be >= 1'),
    (['plots=some'], 'plots must be one of all, end, none'),
    (['trainer.devices=0'], 'trainer.devices must be an integer >= 1'),
    (['deterministic=maybe'], 'deterministic must be true or false'),
    (['eval_test=maybe'], 'eval_test must be true or false'),
    (['trick=amp', 'trick.amp.dtype=fp8'], 'amp dtype must be auto, bf16 or fp16'),
    (['trick=compile', 'trick.compile.enabled=maybe'], 'trick.compile.enabled must be auto, true or false'),
    (['trick=dsd', 'trick.dsd.sparsity=1.5'], 'trick.dsd.sparsity must be in (0, 1)'),
    (['trick=dsd', 'trick.dsd.dense_frac=0.9'], 'trick.dsd needs dense_frac, redense_frac >= 0 with a sum < 1 (room for the sparse phase)'),
    (['trick=ema', 'trick.ema.decay=1.5'], 'trick.ema.decay must be in (0, 1)'),
    (['trick=grad_clip', 'trick.grad_clip.max_norm=0'], 'trick.grad_clip.max_norm must be > 0'),
    (['trick=grad_clip', 'trick.grad_clip.norm_type=-1'], 'trick.grad_clip.norm_type must be > 0 (2 for the L2 norm, inf for the max)'),
    (['trick=half', 'trick.half.dtype=fp8'], 'amp dtype must be auto, bf16 or fp16'),
    (['trick=label_smoothing', 'trick.label_smoothing.eps=1.5'], 'trick.label_smoothing.eps must be in (0, 1)'),
    (['trick=lr_finder', 'trick.lr_finder.num_it=0'], 'lr_finder num_it must be >= 10 (the first 10% and last 5 points are dropped)'),
    (['trick=lr_finder', 'trick.lr_finder.rule=best'], 'lr_finder rule must be one of valley, steepest, min_div10'),
    (['trick=mixup', 'trick.mixup.alpha=-1'], 'trick.mixup needs alpha > 0 and/or cutmix_alpha > 0 (both >= 0)'),
    (['trick=mixup', 'trick.mixup.prob=2'], 'trick.mixup.prob and switch_prob must be in [0, 1]'),
    (['trick=onecycle', 'trick.onecycle.pct_start=0'], 'onecycle pct_start must be in (0, 1)'),
    (['trick=prune', 'trick.prune.sparsity=1.5'], 'trick.prune.sparsity must be in (0, 1)'),
    (['trick=prune', 'trick.prune.scope=everywhere'], 'trick.prune.scope must be global or layer'),
    (['trick=swa', 'trick.swa.start_frac=1.5'], 'trick.swa.start_frac must be in [0, 1)'),
    (['trick=switch_optim', 'trick.switch_optim.to=lbfgs'], 'trick.switch_optim.to must be one of adam, adamw, sgd'),
    (['trick=tta', 'trick.tta.n=0'], 'trick.tta needs n >= 1 and beta in [0, 1]'),
    (['trick=tta', 'trick.tta.beta=2'], 'trick.tta needs n >= 1 and beta in [0, 1]'),
    (['trick=snapshot_ensemble', 'trick.snapshot_ensemble.cycles=0'], 'trick.snapshot_ensemble.cycles must be an integer >= 1'),
    (['trick=snapshot_ensemble', 'trick.snapshot_ensemble.weights=cubic'], 'trick.snapshot_ensemble.weights must be linear, uniform or a list'),
    (['trick=progressive_resizing', 'model=resnet', 'trick.progressive_resizing.initial_scale=0'], 'progressive_resizing initial_scale must be in (0, 1]'),
    (['trick=gradual_unfreezing', 'trick.gradual_unfreezing.every=0'], 'trick.gradual_unfreezing needs every >= 1 and lr_div >= 1'),
    (['trick=lr_finder', 'trick.lr_finder.start_lr=10', 'trick.lr_finder.end_lr=1'], 'lr_finder needs 0 < start_lr < end_lr'),]


@pytest.mark.parametrize("args,words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_bad_value_is_one_line_before_any_work(make_cfg, args, words):
    choices = {**DEFAULTS, **{a.split("=")[0]: a.split("=")[1] for a in args if a.split("=")[0] in DEFAULTS}}
    cfg = make_cfg("debug=smoke", "epochs=1", *args)
    with pytest.raises(DlrunError) as e:
        validate(cfg, choices)
        build_job(cfg, pick_device(str(cfg.device)), print, choices)
    msg = str(e.value)
    assert words in msg and "\n" not in msg, msg
