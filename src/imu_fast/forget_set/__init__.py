"""The one forget-data pipeline: every entry point reads its data through it.

``as_forget_set`` resolves any accepted form once (see ``source``); batches carry the dataset
index of every row (``batch``); ``validate`` and ``losses`` check them the same way everywhere.
"""

from .batch import ForgetBatch
from .digest import batch_digest, indices_digest
from .losses import BatchLosses, ClassificationBatch, classification_logits, prepare_classification, sample_losses
from .shard import check_same_set, local_share, set_digest
from .source import ForgetSet, as_forget_set

__all__ = [
    "BatchLosses",
    "ClassificationBatch",
    "ForgetBatch",
    "ForgetSet",
    "as_forget_set",
    "batch_digest",
    "check_same_set",
    "classification_logits",
    "indices_digest",
    "local_share",
    "prepare_classification",
    "sample_losses",
    "set_digest",
]
