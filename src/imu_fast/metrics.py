"""Evaluation metrics of the vision protocol (IMU_SPEC.md section 5), all in percent.

- UA  = 100 − accuracy on the forget set D_f (higher = more forgotten)
- RA  = accuracy on the retain set D_r
- TA  = accuracy on the test set
- MIA = MIA-Efficacy: an SVM membership-inference attack on one feature, the softmax probability
  of the true label, trained with members = the first |test| samples of D_r (label 1) and
  non-members = the test set (label 0); MIA = 100 × fraction of D_f predicted non-member.
- Avg. Gap = mean over {UA, RA, TA, MIA} of |value − Retrain's value|.

Data sets are accepted in every form the forget set is (read through the same pipeline, so a
DataLoader's sampler is honoured) and read in ascending index order, in batches, with the model in
eval mode (its train/eval flags are restored afterwards). Give them test-time transforms.
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .extras import require
from .forget_set import as_forget_set, classification_logits, prepare_classification
from .model_io import model_device
from .modes import preserved_modes

METRIC_KEYS = ("UA", "RA", "TA", "MIA")
# The attack's classifier, exactly as the field's harnesses configure it.
SVC_KWARGS = {"C": 3, "gamma": "auto", "kernel": "rbf"}


@torch.no_grad()
def true_label_scores(model: nn.Module, data, what: str = "evaluation", batch_size: int = 1024
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(p, correct)`` per sample, in ascending dataset-index order: softmax probability of the
    true label, and argmax == label."""
    data = as_forget_set(data, batch_size=batch_size, what=what)
    device = model_device(model)
    probs, correct = [], []
    with preserved_modes(model):
        model.eval()
        for batch in data.batches():
            prepared = prepare_classification(model, batch, device, what)
            logits = classification_logits(model, prepared, batch, what)
            p = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=1)
            probs.append(p.gather(1, prepared.labels[:, None]).squeeze(1).cpu().double())
            correct.append((logits.argmax(dim=1) == prepared.labels).cpu())
    return torch.cat(probs).numpy(), torch.cat(correct).numpy()


def accuracy_percent(model: nn.Module, data, batch_size: int = 1024) -> float:
    """100 × fraction of ``data`` classified correctly (``imu_fast.models.accuracy`` gives a fraction)."""
    return 100.0 * float(true_label_scores(model, data, batch_size=batch_size)[1].mean())


def mia_from_features(forget_p: np.ndarray, member_p: np.ndarray, nonmember_p: np.ndarray) -> float:
    """Fit ``SVC(C=3, gamma="auto", kernel="rbf")`` on members (1) vs non-members (0); 100 × share of D_f → 0."""
    svm = require("sklearn.svm", "eval", "MIA-Efficacy")  # looked up at call time, so the attack can be inspected

    for arr, what in ((forget_p, "forget"), (member_p, "member"), (nonmember_p, "non-member")):
        if len(arr) == 0:
            raise ValueError(f"MIA: the {what} features are empty")
    x = np.concatenate([member_p, nonmember_p]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member_p)), np.zeros(len(nonmember_p))])
    attack = svm.SVC(**SVC_KWARGS)
    attack.fit(x, y)
    predicted = attack.predict(np.asarray(forget_p).reshape(-1, 1))
    return 100.0 * float(np.mean(predicted == 0))


def _member_count(n_retain: int, n_test: int) -> int:
    if n_retain < n_test:
        raise ValueError(f"MIA needs at least as many retain samples as test samples (the members are the first "
                         f"|test| = {n_test} retain samples), got {n_retain}")
    return n_test


def mia_efficacy(model: nn.Module, forget, retain, test, batch_size: int = 1024) -> float:
    """MIA-Efficacy in percent: the share of D_f an SVM attack calls non-members (see module doc)."""
    return evaluate(model, forget, retain, test, batch_size)["MIA"]


def evaluate(model: nn.Module, forget, retain, test, batch_size: int = 1024) -> dict[str, float]:
    """``{"UA", "RA", "TA", "MIA"}`` in percent, with one pass over each set."""
    f_p, f_ok = true_label_scores(model, forget, "forget", batch_size)
    r_p, r_ok = true_label_scores(model, retain, "retain", batch_size)
    t_p, t_ok = true_label_scores(model, test, "test", batch_size)
    n_members = _member_count(len(r_p), len(t_p))
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
