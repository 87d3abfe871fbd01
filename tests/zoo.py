"""A bug zoo: small user models, data sets and losses with one planted bug each, passed to dlrun
by `_target_` exactly as a user would. tests/test_doctor.py checks the doctor names each one."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlrunner.data.core import from_tensors


def _net(in_shape, num_classes, dropout: float = 0.0) -> nn.Sequential:
    c, h, w = in_shape
    layers = [nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
              nn.Linear(8 * (h // 2) * (w // 2), 64), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(64, num_classes))


# --- models ---------------------------------------------------------------------------------

def healthy(in_shape, num_classes):
    return _net(in_shape, num_classes)


def softmax_head(in_shape, num_classes):
    """Bug: a Softmax at the end, in front of cross-entropy (which wants logits)."""
    return nn.Sequential(_net(in_shape, num_classes), nn.Softmax(dim=1))


class Detached(nn.Module):
    """Bug: the features are detached, so the conv layer never learns."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(8 * (h // 2) * (w // 2), 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.head(self.features(x).detach())


def frozen_layer(in_shape, num_classes):
    """Bug: the first layer is frozen in a model trained from scratch."""
    net = _net(in_shape, num_classes)
    for p in net[0].parameters():
        p.requires_grad_(False)
    return net


class StuckInEval(nn.Module):
    """Bug: train() is overridden and always switches to eval mode, so dropout never trains."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.net = _net(in_shape, num_classes, dropout=0.5)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x):
        return self.net(x)


class LogOfNegative(nn.Module):
    """Bug: a log applied to values that go negative (a 'log-scaled' feature of centred activations)."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.conv = nn.Conv2d(c, 8, 3, padding=1)
        self.log = LogLayer()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * h * w, num_classes))

    def forward(self, x):
        return self.head(self.log(self.conv(x)))


class LogLayer(nn.Module):
    def forward(self, x):
        return torch.log(x)


# --- losses ---------------------------------------------------------------------------------

class FlippedSign(nn.Module):
    """Bug: the sign is flipped; the optimizer maximizes the loss."""

    def forward(self, logits, target):
        return -F.cross_entropy(logits, target)


class NllOfLogits(nn.Module):
    """Bug: log of the raw logits (some negative) fed to NLL."""

    def forward(self, logits, target):
        return F.nll_loss(torch.log(logits), target)


class RunningMeanLoss:
    """Bug: a metric accumulator that is never reset; it returns the mean over every call so far."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def __call__(self, logits, target):
        loss = F.cross_entropy(logits, target)
        self.total, self.count = self.total + float(loss), self.count + 1
        return loss - float(loss) + self.total / self.count  # gradient of this batch, value of the history


# --- data -----------------------------------------------------------------------------------

def _raw_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1)  # (N, 1, 8, 8), values 0..16
    return x, d.target.astype(np.int64), [str(i) for i in range(10)]


def shuffled_labels(**knobs):
    """Bug: labels permuted independently of the inputs (e.g. two lists sorted differently)."""
    x, y, names = _raw_digits()
    y = np.random.default_rng(0).permutation(y)
    return from_tensors("shuffled_digits", x / 16, y, names, "image", **_keep(knobs))


def unscaled(**knobs):
    """Bug: raw 0-255 pixels, no scaling, no normalization."""
    x, y, names = _raw_digits()
    knobs = {"normalize": False, **_keep(knobs)}  # the user left normalization off (data.normalize=false)
    return from_tensors("unscaled_digits", (x * 255 / 16).round(), y, names, "image", **knobs)


def small_digits(**knobs):
    """Healthy: the 8x8 digits scaled to [0, 1] and normalized."""
    x, y, names = _raw_digits()
    return from_tensors("digits8", x / 16, y, names, "image", **_keep(knobs))


def _keep(knobs: dict) -> dict:
    ok = ("fraction", "classes", "val_fraction", "test_fraction", "split_seed", "batch_size", "normalize")
    return {k: v for k, v in knobs.items() if k in ok}



def softmax_wrong_dim(in_shape, num_classes):
    """Bug: softmax over the batch dimension."""
    return nn.Sequential(_net(in_shape, num_classes), nn.Softmax(dim=0))


class BroadcastMSE(nn.Module):
    """Bug: a (B, 1) prediction against a (B,) target broadcasts to (B, B)."""

    def forward(self, logits, target):
        return F.mse_loss(logits.max(1, keepdim=True).values, target.float())


# --- second round: what hooks on nn modules do not see, and silent data/loss bugs --------------

class FunctionalTanh(nn.Module):
    """Bug: tanh written as a function (no nn.Tanh module to hook) after layers initialized far
    too large: nearly every unit saturates."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        flat = int(np.prod(in_shape))
        self.fc1, self.fc2, self.out = nn.Linear(flat, 64), nn.Linear(64, 64), nn.Linear(64, num_classes)
        with torch.no_grad():
            self.fc1.weight.normal_(0.0, 3.0)  # a saturating init
            self.fc2.weight.normal_(0.0, 3.0)

    def forward(self, x):
        h = torch.tanh(self.fc1(x.flatten(1)))
        return self.out(torch.tanh(self.fc2(h)))


class SummedLoss(nn.Module):
    """Bug: cross-entropy summed over the batch instead of averaged."""

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, reduction="sum")


class NllOfRawLogits(nn.Module):
    """Bug: NLL on raw logits (the log_softmax is missing)."""

    def forward(self, logits, target):
        return F.nll_loss(logits, target)


class IgnoresInput(nn.Module):
    """Bug: forward feeds the network a placeholder instead of its argument."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.net = _net(in_shape, num_classes)

    def forward(self, x):
        h = torch.zeros_like(x)  # meant: the preprocessed x
        return self.net(h)


def wrong_width_head(in_shape, num_classes):
    """Bug: the head is sized for another data set (two more outputs than there are classes)."""
    return _net(in_shape, num_classes + 2)


class DataCut(Detached):
    """Bug: the features are read through .data, which cuts the gradient to the conv layer."""

    def forward(self, x):
        return self.head(self.features(x).data)


def random_labels(**knobs):
    """Bug: labels drawn independently of the inputs (e.g. read from another file)."""
    x, y, names = _raw_digits()
    y = np.random.default_rng(1).integers(0, 10, len(y))
    return from_tensors("random_label_digits", x / 16, y, names, "image", **_keep(knobs))


def constant_inputs(**knobs):
    """Bug: every index returns the same image (a loader that reads sample 0 each time)."""
    x, y, names = _raw_digits()
    x = (x[:1] / 16).expand(len(x), -1, -1, -1).clone()
    return from_tensors("constant_digits", x, y, names, "image", **_keep(knobs))


class SmallBatchNormNet(nn.Module):
    """Healthy: a small conv net with BatchNorm (no bias before it)."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        c, h, w = in_shape
        self.net = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                                 nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * (h // 4) * (w // 4), num_classes))

    def forward(self, x):
        return self.net(x)


class BatchNormMLP(nn.Module):
    """Healthy at an ordinary batch: a hidden layer with BatchNorm1d. At a batch of 2, BatchNorm
    normalizes each unit over 2 samples (every output becomes +-1): what the net learns in train mode
    does not hold under the running statistics of eval mode."""

    def __init__(self, in_shape, num_classes):
        super().__init__()
        n = 1
        for s in in_shape:
            n *= s
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(),
                                 nn.Linear(64, num_classes))

    def forward(self, x):
        return self.net(x)
