"""The default influence parameters theta_c and per-sample loss for a Hugging Face model.

- A causal language model (``...ForCausalLM``, ``...LMHeadModel``): the q/k/v/o projection weights
  of three consecutive decoder layers, and ``imu_fast.lm.causal_lm_losses``. The authors used
  layers 19-21; ``default_layers`` keeps them at the same relative depth for any model: three
  layers starting at round(19/32 of the depth), i.e. 19-21 of a 32-layer model, 18-20 of a
  30-layer one, 10-12 of a 16-layer one, 1-3 of a 4-layer one, every layer of a model with 3 or
  fewer.
- A sequence classifier (``...ForSequenceClassification``): its classification head, found on the
  first batch, scored in closed form, with the cross-entropy of the labels under ``"labels"``.

Anything else needs ``targets=`` (and ``loss_fn=`` unless its batches are classification batches).
"""

from __future__ import annotations

from ..lm import attention_targets, causal_lm_losses

AUTHORS_LAYERS = (19, 32)  # their first influence layer, and the depth it is taken relative to


def model_kind(model) -> str:
    """``"causal_lm"``, ``"classifier"`` or ``"other"``, from the model class (PEFT wrappers included)."""
    names = {type(model).__name__}
    base = getattr(model, "get_base_model", None)
    if callable(base):
        names.add(type(base()).__name__)
    try:
        from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
        causal, classifier = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()), set(
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values())
    except ImportError:
        causal, classifier = set(), set()
    if any(n in causal or n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return "causal_lm"
    if any(n in classifier or n.endswith("ForSequenceClassification") for n in names):
        return "classifier"
    return "other"


def default_layers(n_layers: int) -> list[int]:
    """Three consecutive decoder layers at the authors' relative depth (see the module docstring)."""
    if n_layers <= 3:
        return list(range(n_layers))
    first, depth = AUTHORS_LAYERS
    start = min((first * n_layers + depth // 2) // depth, n_layers - 3)
    return [start, start + 1, start + 2]


def _n_layers(model) -> int:
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"cannot tell how many decoder layers {type(model).__name__} has (no config.num_hidden_layers); "
                         "pass targets= (parameter names, parameters or modules) to choose the influence parameters")
    return n


def default_theta(model, targets, loss_fn):
    """``(targets, loss_fn, kind)`` with the defaults filled in; ``targets`` None means the head."""
    kind = model_kind(model)
    if kind == "causal_lm":
        if targets is None:
            targets = attention_targets(model, default_layers(_n_layers(model)))
        return targets, loss_fn or causal_lm_losses, kind
    if kind == "classifier" or loss_fn is None and targets is None:
        return targets, loss_fn, kind
    if targets is None:
        raise ValueError(f"{type(model).__name__} is neither a causal LM nor a sequence classifier, so there is no default "
                         "for the influence parameters: pass targets= with loss_fn=")
    return targets, loss_fn, kind
