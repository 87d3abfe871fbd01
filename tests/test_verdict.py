"""The fit verdict reads the curves the way the guides do."""
from __future__ import annotations

from dlrunner.reporting.verdict import fit_verdict


def curve(train_acc, val_acc, val_loss):
    return [{"train/acc": a, "val/acc": b, "val/loss": c} for a, b, c in zip(train_acc, val_acc, val_loss)]


def test_overfitting_underfitting_good_fit_not_converged():
    over = fit_verdict(curve([0.9, 0.99, 1.0], [0.85, 0.88, 0.86], [0.40, 0.35, 0.50]))
    assert over["verdict"] == "overfitting" and "augment" in " ".join(over["remedies"])
    under = fit_verdict(curve([0.5, 0.55, 0.56], [0.5, 0.54, 0.55], [1.2, 1.19, 1.19]))
    assert under["verdict"] == "underfitting" and "bigger model" in " ".join(under["remedies"])
    good = fit_verdict(curve([0.9, 0.98, 0.99], [0.9, 0.97, 0.97], [0.3, 0.12, 0.121]))
    assert good["verdict"] == "good fit"
    falling = fit_verdict(curve([0.6, 0.8, 0.85], [0.6, 0.78, 0.83], [1.0, 0.7, 0.5]))
    assert falling["verdict"] == "not converged" and "longer" in falling["remedies"][0]
    assert "epoch 3 of 3" in falling["evidence"]
