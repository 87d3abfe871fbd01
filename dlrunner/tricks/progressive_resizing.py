"""Progressive resizing (fastbook ch. 7; MosaicML Composer's ProgressiveResizing): train on
downscaled images first (cheap steps, coarse features), grow them linearly with the step count,
and finish the last part of training at full size so BatchNorm statistics and the classifier see
the test resolution (Touvron et al. 2019, "FixRes"). Suggested: initial_scale 0.5 (Composer),
finish_frac 0.8, sizes in multiples of 4 or 8 (fewer distinct shapes: less cuDNN tuning and
fewer torch.compile recompiles). Needs a model that accepts any input size (a global-pool head,
e.g. model=resnet head=gap); evaluation is always at full size."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dlrunner.errors import DlrunError
from dlrunner.tricks.base import Trick

MIN_SIDE = 8  # below this, conv stacks with a few poolings run out of pixels


def side_at(step: int, total: int, full: int, initial_scale: float = 0.5, finish_frac: float = 0.8,
            multiple: int = 4) -> int:
    """Image side at a global step: initial_scale * full at step 0, linear growth, full from
    finish_frac * total steps on; rounded to a multiple, clamped to [MIN_SIDE, full]."""
    done = min(1.0, step / max(finish_frac * total, 1e-9))
    if done >= 1.0:
        return full
    exact = full * (initial_scale + (1.0 - initial_scale) * done)
    side = int(exact / multiple + 0.5) * multiple  # nearest multiple (half up)
    return min(full, max(side, MIN_SIDE))


class ProgressiveResizing(Trick):
    name = "progressive_resizing"
    needs = {"images": "trick=progressive_resizing resizes images; data {data} is {modality}: drop the trick"}

    def __init__(self, initial_scale: float = 0.5, finish_frac: float = 0.8, multiple: int = 4):
        if not 0.0 < initial_scale <= 1.0:
            raise DlrunError(f"progressive_resizing initial_scale must be in (0, 1]; got {initial_scale}")
        if not 0.0 < finish_frac <= 1.0:
            raise DlrunError(f"progressive_resizing finish_frac must be in (0, 1]; got {finish_frac}")
        if int(multiple) != multiple or int(multiple) < 1:
            raise DlrunError(f"progressive_resizing multiple must be an integer >= 1; got {multiple}")
        self.initial_scale, self.finish_frac, self.multiple = float(initial_scale), float(finish_frac), int(multiple)
        self.total, self.steps_per_epoch, self.full = 0, 0, (0, 0)

    def bind(self, job: Any) -> None:
        self.total, self.steps_per_epoch = job.epochs * job.steps_per_epoch, job.steps_per_epoch
        self.full = tuple(int(s) for s in job.data.in_shape[-2:])
        self._check_model(job)

    def size_at(self, step: int) -> tuple[int, int]:
        """(H, W) at a global step: both sides follow the same schedule, each quantized."""
        return tuple(side_at(step, self.total, s, self.initial_scale, self.finish_frac, self.multiple)
                     for s in self.full)

    def _check_model(self, job: Any) -> None:
        """A dry forward at the smallest size, so a model with a fixed flatten size (LeNet,
        resnet head=fc) is refused now rather than at the first step."""
        h, w = self.size_at(0)
        if (h, w) == self.full:
            return
        model = job.base_model
        was_training = model.training
        x = torch.zeros(2, *job.data.in_shape[:-2], h, w, device=job.device)  # (2, C, h, w)
        model.eval()  # eval + no_grad: BatchNorm buffers and the RNG stay untouched
        try:
            with torch.no_grad(), job.precision.autocast():
                out = model(x)
            ok, why = tuple(out.shape) == (2, job.data.num_classes), f"output shape {tuple(out.shape)}"
        except (RuntimeError, ValueError, IndexError) as e:  # what shape mismatches raise
            ok, why = False, str(e).strip().splitlines()[0][:100]
        finally:
            model.train(was_training)
        if not ok:
            raise DlrunError(f"trick=progressive_resizing: {type(model).__name__} built for {self.full[0]}x"
                             f"{self.full[1]} cannot take {h}x{w} inputs ({why}); use a model with a global-pool "
                             "head (model=resnet head=gap) or a larger trick.progressive_resizing.initial_scale")

    def on_batch(self, batch: tuple, step: int) -> tuple:
        x, y = batch  # x (B, C, H, W) at full size; labels untouched
        size = self.size_at(step)
        if tuple(x.shape[-2:]) == size:
            return batch
        down = size[0] < x.shape[-2] or size[1] < x.shape[-1]  # antialias: no aliasing when shrinking
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down), y

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """The side (height) used at the last step of this epoch: a function of the step alone."""
        return {"resize/size": float(self.size_at((epoch + 1) * self.steps_per_epoch - 1)[0])}

    def report(self) -> dict:
        sizes = sorted({side_at(s, self.total, self.full[0], self.initial_scale, self.finish_frac, self.multiple)
                        for s in range(self.total)})
        return {"sizes": sizes, "full": list(self.full), "finish_frac": self.finish_frac}
