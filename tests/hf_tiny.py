"""Tiny config-built Hugging Face models and forget sets for the trainer-integration tests (no download)."""

import tempfile

import torch

from imu_fast.lm import causal_lm_losses

transformers = __import__("transformers")


def fitted_llama(seed=0, layers=4, n=12, length=8, vocab=30):
    """A tiny Llama fitted to ``n`` random sequences (so unlearning has something to undo), and those
    sequences as a list of dict samples."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(cfg)
    ids = torch.randint(0, vocab, (n, length))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        causal_lm_losses(model, {"input_ids": ids}).mean().backward()
        opt.step()
    samples = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r.clone()} for r in ids]
    return model.eval(), samples


def fitted_classifier(seed=0, n=16, length=6, vocab=20, classes=3):
    """A tiny Llama sequence classifier fitted to random token sequences with random labels."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   num_labels=classes, pad_token_id=0)
    model = transformers.LlamaForSequenceClassification(cfg)
    ids = torch.randint(1, vocab, (n, length))
    labels = torch.randint(0, classes, (n,))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        opt.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
    samples = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": y} for r, y in zip(ids, labels)]
    return model.eval(), samples


def stacked(samples):
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}


def lm_loss(model, samples) -> float:
    with torch.no_grad():
        return causal_lm_losses(model.eval(), stacked(samples)).mean().item()


# The Trainers' output folders (nothing is saved in them) live under one folder removed at exit.
_OUTPUT_ROOT = tempfile.TemporaryDirectory(prefix="imu-hf-")


def args(**kw):
    base = dict(output_dir=tempfile.mkdtemp(dir=_OUTPUT_ROOT.name), per_device_train_batch_size=4, num_train_epochs=3,
                learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no", logging_strategy="no",
                disable_tqdm=True, seed=0)
    base.update(kw)
    return transformers.TrainingArguments(**base)
