"""The fit verdict after a run, from its train and val curves (Full Stack Deep Learning's
bias/variance reading; remedies from the guides)."""
from __future__ import annotations

REMEDIES = {
    "not converged": ["train longer (the validation loss was still falling)", "raise the learning rate (lr_finder)"],
    "underfitting": ["a bigger model: the next rung of the ladder (model=resnet, model.width, model.depth)",
                     "less regularization (dropout, weight decay, augmentation)", "train longer or tune the LR"],
    "overfitting": ["more data or data augmentation (data.augment=true)", "normalization (BatchNorm)",
                    "more regularization (dropout, weight decay, label_smoothing, mixup)", "early stopping: use best.pt"],
    "good fit": ["scale up the data or the model, or tune the remaining hyperparameters by importance"],
}


def fit_verdict(history: list[dict], underfit_acc: float = 0.9, gap: float = 0.05, rise: float = 0.1) -> dict:
    """One of: not converged | underfitting | overfitting | good fit, with the evidence and remedies.

    not converged: the best val loss is in the last epoch and still improving by > 1% per epoch.
    underfitting:  final train accuracy below `underfit_acc` (high bias).
    overfitting:   train - val accuracy above `gap` and val loss `rise` above its minimum (high variance).
    """
    if not history:
        return {"verdict": "not converged", "evidence": "no finished epoch", "remedies": REMEDIES["not converged"]}
    last = history[-1]
    vl = [r["val/loss"] for r in history]
    best = min(range(len(vl)), key=vl.__getitem__)
    train_acc, val_acc = last["train/acc"], last["val/acc"]
    evidence = (f"train acc {train_acc:.3f}, val acc {val_acc:.3f}, val loss {vl[-1]:.4f} "
                f"(min {vl[best]:.4f} at epoch {best + 1} of {len(vl)})")
    still_falling = best == len(vl) - 1 and len(vl) > 1 and vl[-2] - vl[-1] > 0.01 * vl[-2]
    if train_acc < underfit_acc:
        verdict = "not converged" if still_falling else "underfitting"
    elif train_acc - val_acc > gap and vl[-1] > (1 + rise) * vl[best]:
        verdict = "overfitting"
    elif still_falling:
        verdict = "not converged"
    else:
        verdict = "good fit"
    return {"verdict": verdict, "evidence": evidence, "remedies": REMEDIES[verdict]}


def final_verdict(row: dict, underfit_acc: float = 0.9, gap: float = 0.05) -> dict:
    """mode=final has no validation curve: the last epoch's training accuracy against the test
    split's (scored once, after training). underfitting: train accuracy below `underfit_acc`;
    overfitting: train - test accuracy above `gap`; good fit otherwise. The test split must not
    drive more tuning: the remedies are for the next project, not for another look at it."""
    train_acc, test_acc = row.get("train/acc"), row.get("test/acc")
    if train_acc is None:
        return {"verdict": "not converged", "evidence": "no finished epoch", "remedies": REMEDIES["not converged"]}
    if test_acc is None:  # stopped before the test split was scored
        verdict = "underfitting" if train_acc < underfit_acc else "good fit"
        return {"verdict": verdict, "evidence": f"train acc {train_acc:.3f}; the test split was not scored",
                "remedies": REMEDIES[verdict]}
    evidence = f"train acc {train_acc:.3f} (train+val), test acc {test_acc:.3f}"
    if train_acc < underfit_acc:
        verdict = "underfitting"
    elif train_acc - test_acc > gap:
        verdict = "overfitting"
    else:
        verdict = "good fit"
    return {"verdict": verdict, "evidence": evidence, "remedies": REMEDIES[verdict]}
