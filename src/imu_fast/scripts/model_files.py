"""Reading and writing the model of a script command.

Two forms are accepted, and the result is written back in the same form:

- a Hugging Face ``save_pretrained`` folder (``config.json`` and weights; its tokenizer, if saved
  beside it, is used for text forget sets): a causal language model or a sequence classifier,
  chosen by the architectures its config names (needs the ``hf`` extra);
- a torch checkpoint file: a state dict (alone or under ``"state_dict"`` / ``"model_state_dict"``),
  loaded safely, into the model built by ``--model-class module:function``; or a whole pickled
  ``nn.Module`` (``torch.save(model, path)``), whose loading runs code from the file and therefore
  needs ``--trust-checkpoint``.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..extras import require
from .bad_file import BadFile

STATE_KEYS = ("state_dict", "model_state_dict")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass
class LoadedModel:
    model: nn.Module
    form: str  # "hf" | "state_dict" | "module"
    task: str  # "causal-lm" | "classifier"
    tokenizer: object = None
    num_layers: int | None = None  # decoder layers of a causal LM


def _hf_task(config, path: Path) -> str:
    names = list(getattr(config, "architectures", None) or [])
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return "causal-lm"
    if any(n.endswith("ForSequenceClassification") for n in names):
        return "classifier"
    raise BadFile(path / "config.json", f"its architectures {names or '(none)'} are neither a causal language model "
                                        "(...ForCausalLM) nor a sequence classifier (...ForSequenceClassification)")


def _load_hf(path: Path, progress: bool) -> LoadedModel:
    transformers = require("transformers", "hf", "reading a Hugging Face model folder")
    if not progress:
        transformers.utils.logging.disable_progress_bar()
    if not (path / "config.json").is_file():
        raise BadFile(path, "a folder, but not a Hugging Face save_pretrained folder (it has no config.json)")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises several types for a damaged config
        raise BadFile(path / "config.json", f"cannot be read as a model config ({exc})") from None
    task = _hf_task(config, path)
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise BadFile(path, f"has no model weights (none of {', '.join(WEIGHT_FILES)})")
    auto = transformers.AutoModelForCausalLM if task == "causal-lm" else transformers.AutoModelForSequenceClassification
    try:
        model = auto.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise BadFile(path, f"the model cannot be loaded ({type(exc).__name__}: {exc})") from None
    tokenizer = None
    if any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt")):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:
            raise BadFile(path, f"its tokenizer cannot be loaded ({type(exc).__name__}: {exc})") from None
    return LoadedModel(model.eval(), "hf", task, tokenizer, getattr(config, "num_hidden_layers", None))


def _factory(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--model-class must look like 'package.module:function', got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--model-class {spec!r} cannot be imported ({exc})") from None


def _state_dict_of(obj, path: Path) -> dict | None:
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    return None


def _load_torch(path: Path, model_class: str | None, trust: bool) -> LoadedModel:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust:
            raise BadFile(path, "it holds pickled Python objects (a whole nn.Module saved with torch.save(model)?); "
                                "loading it runs code from the file: pass --trust-checkpoint if you trust it, or save "
                                "model.state_dict() and pass --model-class") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise BadFile(path, f"cannot be loaded ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # truncated, not a torch file at all
        raise BadFile(path, f"is not a torch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, nn.Module):
        return LoadedModel(obj.eval(), "module", "classifier")
    state = _state_dict_of(obj, path)
    if state is None:
        raise BadFile(path, f"holds a {type(obj).__name__}, not an nn.Module or a state dict of tensors")
    if model_class is None:
        raise BadFile(path, "holds a state dict: pass --model-class package.module:function to build the model it "
                            "belongs to")
    model = _factory(model_class)()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model-class {model_class!r} returned a {type(model).__name__}, not an nn.Module")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BadFile(path, f"does not fit the model built by {model_class} ({exc})") from None
    return LoadedModel(model.eval(), "state_dict", "classifier")


def load_model(path, model_class: str | None = None, trust: bool = False, progress: bool = True) -> LoadedModel:
    path = Path(path)
    if not path.exists():
        raise BadFile(path, "no such file or folder")
    if path.is_dir():
        if model_class is not None:
            raise ValueError("--model-class applies to torch checkpoint files, not to Hugging Face folders")
        return _load_hf(path, progress)
    return _load_torch(path, model_class, trust)


def save_model(loaded: LoadedModel, out: Path) -> Path:
    """Writes the model into ``out`` in the form it was read in; returns what was written."""
    if loaded.form == "hf":
        loaded.model.save_pretrained(out)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(out)
        return out
    target = out / "model.pt"
    torch.save(loaded.model if loaded.form == "module" else loaded.model.state_dict(), target)
    return target
