"""Reading the forget set of a script command from a file.

- ``.jsonl``: one JSON object per line (blank lines skipped), all of one kind:
  ``{"text": ...}`` (a causal language model forgets the text), ``{"question": ..., "answer": ...}``
  (it forgets the answer: only the answer's tokens are scored) or ``{"text": ..., "label": k}``
  (a sequence classifier forgets the labelled text). Texts are tokenised by the model folder's
  tokenizer, cut at ``max_length`` tokens and padded per batch.
- ``.pt``: tensors saved with ``torch.save``, read safely: a pair ``(X, Y)`` (or a dict with
  ``"x"``/``"y"`` or ``"inputs"``/``"labels"``) for a classifier called as ``model(X)``, or a dict
  of model inputs with ``"input_ids"`` (and ``"labels"`` for a classifier) for a Hugging Face model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..lm import IGNORE_INDEX, causal_lm_losses
from .bad_file import BadFile
from .model_files import LoadedModel

KINDS = {"text": ("text",), "question/answer": ("question", "answer"), "text/label": ("text", "label")}


@dataclass
class ForgetData:
    data: object  # what imu_fast.unlearn / influence_scores take
    loss_fn: object  # per-sample losses (None: cross-entropy on classification batches)
    kind: str
    n: int


def _kind(record: dict) -> str:
    if "question" in record or "answer" in record:
        return "question/answer"
    return "text/label" if "label" in record else "text"


def read_jsonl(path: Path) -> tuple[list[dict], list[int], str]:
    """``(records, their line numbers, kind)``, every line checked."""
    records, lines, kind = [], [], None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadFile(path, f"is not UTF-8 text ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadFile(path, f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise BadFile(path, f"line {number} is a JSON {type(record).__name__}, not an object")
        this = _kind(record)
        kind = kind or this
        if this != kind:
            raise BadFile(path, f"line {number} is a {this} sample but line {lines[0]} a {kind} one; use one kind per file")
        for field in KINDS[this]:
            if field not in record:
                raise BadFile(path, f"line {number} lacks {field!r} (a {this} sample has {list(KINDS[this])})")
            value = record[field]
            if field == "label":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise BadFile(path, f"line {number}: 'label' must be a class index (an integer >= 0), got {value!r}")
            elif not isinstance(value, str) or not value.strip():
                raise BadFile(path, f"line {number}: {field!r} must be a non-empty string, got {value!r}")
        records.append(record)
        lines.append(number)
    if not records:
        raise BadFile(path, "holds no sample (it is empty)")
    return records, lines, kind


def _encode(tokenizer, record: dict, kind: str, max_length: int) -> dict:
    if kind == "question/answer":
        question = tokenizer(record["question"])["input_ids"]
        answer = tokenizer(" " + record["answer"], add_special_tokens=False)["input_ids"]
        ids = (question + answer)[:max_length]
        labels = ([IGNORE_INDEX] * len(question) + answer)[:max_length]  # only the answer is scored
    else:
        ids = tokenizer(record["text"], truncation=True, max_length=max_length)["input_ids"]
        labels = record["label"] if kind == "text/label" else list(ids)
    return {"input_ids": ids, "labels": labels}


def pad_collate(pad_id: int, causal: bool):
    """Pads a batch of encoded samples on the right; padding is masked out and never a target."""

    def collate(samples: list[dict]) -> dict:
        width = max(len(s["input_ids"]) for s in samples)
        ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long) if causal else None
        for row, s in enumerate(samples):
            n = len(s["input_ids"])
            ids[row, :n] = torch.tensor(s["input_ids"])
            mask[row, :n] = 1
            if causal:
                labels[row, :n] = torch.tensor(s["labels"])
        if not causal:
            labels = torch.tensor([s["labels"] for s in samples])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def _text_forget_set(path: Path, loaded: LoadedModel, batch_size: int, max_length: int) -> ForgetData:
    records, lines, kind = read_jsonl(path)
    if loaded.form != "hf" or loaded.tokenizer is None:
        raise BadFile(path, "texts need a Hugging Face model folder with its tokenizer saved beside it "
                            "(tokenizer.save_pretrained(folder)); give a .pt of tensors for other models")
    causal = loaded.task == "causal-lm"
    if causal == (kind == "text/label"):
        wanted = "'text' or 'question'/'answer'" if causal else "'text' and 'label'"
        raise BadFile(path, f"holds {kind} samples, but the model is a {loaded.task}: give {wanted} samples")
    tokenizer = loaded.tokenizer
    samples = []
    for record, number in zip(records, lines):
        encoded = _encode(tokenizer, record, kind, max_length)
        if causal and sum(label != IGNORE_INDEX for label in encoded["labels"][1:]) == 0:
            raise BadFile(path, f"line {number}: nothing to predict after tokenising (fewer than 2 tokens, or the answer "
                                f"is cut off by --max-length {max_length})")
        samples.append(encoded)
    if not causal:
        classes = getattr(loaded.model.config, "num_labels", None)
        bad = [n for r, n in zip(records, lines) if classes is not None and r["label"] >= classes]
        if bad:
            raise BadFile(path, f"lines {bad[:10]} have labels >= {classes}, the model's number of classes")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    if not causal and getattr(loaded.model.config, "pad_token_id", None) is None:
        loaded.model.config.pad_token_id = pad  # sequence classifiers pool at the last non-padding token
    loader = DataLoader(samples, batch_size=batch_size, collate_fn=pad_collate(pad, causal))
    return ForgetData(loader, causal_lm_losses if causal else None, kind, len(samples))


def _tensor_forget_set(path: Path, loaded: LoadedModel) -> ForgetData:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadFile(path, f"cannot be read as tensors saved with torch.save ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj):
        data = tuple(obj)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        pairs = [(a, b) for a, b in (("x", "y"), ("inputs", "labels")) if set(obj) == {a, b}]
        data = (obj[pairs[0][0]], obj[pairs[0][1]]) if pairs else dict(obj)
    else:
        shown = type(obj).__name__ + (f" with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else "")
        raise BadFile(path, f"holds a {shown}; give a pair (X, Y) of tensors or a dict of tensors")
    causal = loaded.task == "causal-lm"
    if isinstance(data, dict):
        if loaded.form != "hf" or "input_ids" not in data:
            raise BadFile(path, f"holds a dict with keys {sorted(data)}: a dict of model inputs needs 'input_ids' and a "
                                "Hugging Face model; for model(X) give (X, Y) or {'x': X, 'y': Y}")
        if not causal and "labels" not in data:
            raise BadFile(path, "a sequence classifier's forget set needs class labels under 'labels'")
    elif causal:
        raise BadFile(path, "holds (X, Y) tensors, but the model is a causal language model: give a dict with "
                            "'input_ids' (and 'attention_mask', 'labels') or a JSONL of texts")
    n = len(next(iter(data.values())) if isinstance(data, dict) else data[0])
    return ForgetData(data, causal_lm_losses if causal else None, "tensors", n)


def check_forget_path(path) -> Path:
    """The cheap checks, made before a model is loaded."""
    path = Path(path)
    if not path.is_file():
        raise BadFile(path, "no such file" if not path.exists() else "not a file")
    if path.suffix.lower() not in (".jsonl", ".json", ".pt", ".pth"):
        raise BadFile(path, f"unknown kind of file {path.suffix or '(no extension)'!r}: give a .jsonl of texts or "
                            "question/answer pairs, or a .pt of tensors")
    return path


def read_forget(path, loaded: LoadedModel, *, batch_size: int, max_length: int) -> ForgetData:
    path = check_forget_path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _text_forget_set(path, loaded, batch_size, max_length)
    return _tensor_forget_set(path, loaded)
