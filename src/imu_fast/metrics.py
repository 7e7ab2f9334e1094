"""Evaluation metrics of the vision protocol (IMU_SPEC.md section 5), all in percent.

- UA  = 100 − accuracy on the forget set D_f (higher = more forgotten)
- RA  = accuracy on the retain set D_r
- TA  = accuracy on the test set
- MIA = MIA-Efficacy: an SVM membership-inference attack on one feature, the softmax probability
  of the true label, trained with members = the first |test| samples of D_r (label 1) and
  non-members = the test set (label 0); MIA = 100 × fraction of D_f predicted non-member.
- Avg. Gap = mean over {UA, RA, TA, MIA} of |value − Retrain's value|.

Data sets are accepted as the forget set is (a map-style Dataset of ``(x, y)``, a DataLoader over
one, a pair of tensors, a list of samples) and read in their own order, in batches, with the model
in eval mode (its train/eval flags are restored afterwards). Give them test-time transforms.
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .forget_data import model_device, nonempty_dataset
from .head import logits_of
from .modes import preserved_modes

METRIC_KEYS = ("UA", "RA", "TA", "MIA")
# The attack's classifier, exactly as the field's harnesses configure it.
SVC_KWARGS = {"C": 3, "gamma": "auto", "kernel": "rbf"}


@torch.no_grad()
def true_label_scores(model: nn.Module, data, what: str = "evaluation", batch_size: int = 1024
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(p, correct)`` per sample: softmax probability of the true label, and argmax == label."""
    dataset = nonempty_dataset(data, what)
    device = model_device(model)
    probs, correct = [], []
    with preserved_modes(model):
        model.eval()
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
                raise ValueError(f"the {what} set: labels must be one integer class index per sample, "
                                 f"got shape {tuple(y.shape)} and dtype {y.dtype} for inputs of shape {tuple(x.shape)}")
            x, y = x.to(device), y.to(device)
            logits = logits_of(model(x))
            if ((y < 0) | (y >= logits.shape[1])).any():
                raise ValueError(f"the {what} set has labels outside [0, {logits.shape[1]})")
            p = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=1)
            probs.append(p.gather(1, y[:, None]).squeeze(1).cpu().double())
            correct.append((logits.argmax(dim=1) == y).cpu())
    return torch.cat(probs).numpy(), torch.cat(correct).numpy()


def accuracy_percent(model: nn.Module, data, batch_size: int = 1024) -> float:
    """100 × fraction of ``data`` classified correctly (``imu_fast.models.accuracy`` gives a fraction)."""
    return 100.0 * float(true_label_scores(model, data, batch_size=batch_size)[1].mean())


def mia_from_features(forget_p: np.ndarray, member_p: np.ndarray, nonmember_p: np.ndarray) -> float:
    """Fit ``SVC(C=3, gamma="auto", kernel="rbf")`` on members (1) vs non-members (0); 100 × share of D_f → 0."""
    from sklearn import svm  # looked up at call time, so the attack's classifier can be inspected

    for arr, what in ((forget_p, "forget"), (member_p, "member"), (nonmember_p, "non-member")):
        if len(arr) == 0:
            raise ValueError(f"MIA: the {what} features are empty")
    x = np.concatenate([member_p, nonmember_p]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member_p)), np.zeros(len(nonmember_p))])
    attack = svm.SVC(**SVC_KWARGS)
    attack.fit(x, y)
    predicted = attack.predict(np.asarray(forget_p).reshape(-1, 1))
    return 100.0 * float(np.mean(predicted == 0))


def _member_count(retain: Dataset, test: Dataset) -> int:
    if len(retain) < len(test):
        raise ValueError(f"MIA needs at least as many retain samples as test samples (the members are the first "
                         f"|test| = {len(test)} retain samples), got {len(retain)}")
    return len(test)


def mia_efficacy(model: nn.Module, forget, retain, test, batch_size: int = 1024) -> float:
    """MIA-Efficacy in percent: the share of D_f an SVM attack calls non-members (see module doc)."""
    forget, retain, test = nonempty_dataset(forget, "forget"), nonempty_dataset(retain, "retain"), nonempty_dataset(test, "test")
    members = Subset(retain, range(_member_count(retain, test)))
    return mia_from_features(true_label_scores(model, forget, "forget", batch_size)[0],
                             true_label_scores(model, members, "retain", batch_size)[0],
                             true_label_scores(model, test, "test", batch_size)[0])


def evaluate(model: nn.Module, forget, retain, test, batch_size: int = 1024) -> dict[str, float]:
    """``{"UA", "RA", "TA", "MIA"}`` in percent, with one pass over each set."""
    forget, retain, test = nonempty_dataset(forget, "forget"), nonempty_dataset(retain, "retain"), nonempty_dataset(test, "test")
    n_members = _member_count(retain, test)
    f_p, f_ok = true_label_scores(model, forget, "forget", batch_size)
    r_p, r_ok = true_label_scores(model, retain, "retain", batch_size)
    t_p, t_ok = true_label_scores(model, test, "test", batch_size)
    return {
        "UA": 100.0 - 100.0 * float(f_ok.mean()),
        "RA": 100.0 * float(r_ok.mean()),
        "TA": 100.0 * float(t_ok.mean()),
        "MIA": mia_from_features(f_p, r_p[:n_members], t_p),
    }


def avg_gap(result: Mapping[str, float], retrain_result: Mapping[str, float]) -> float:
    """mean over {UA, RA, TA, MIA} of |result[k] − retrain_result[k]| (lower = closer to Retrain)."""
    gaps = []
    for k in METRIC_KEYS:
        for r, what in ((result, "result"), (retrain_result, "retrain_result")):
            if k not in r:
                raise KeyError(f"{what} lacks {k!r}; avg_gap needs {list(METRIC_KEYS)}")
            if not isinstance(r[k], numbers.Real) or isinstance(r[k], bool) or not math.isfinite(r[k]):
                raise ValueError(f"{what}[{k!r}] must be a finite number, got {r[k]!r}")
        gaps.append(abs(result[k] - retrain_result[k]))
    return sum(gaps) / len(gaps)
