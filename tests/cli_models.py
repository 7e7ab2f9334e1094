"""Models and files for the script-command tests: a torch classifier factory (for --model-class),
tiny Hugging Face models with a word-level tokenizer, all built offline."""

import json

import torch
from torch import nn

WORDS = "the cat sat on a mat dog ran far away who what is answer blue red green sky grass".split()


def mlp() -> nn.Module:
    """``--model-class cli_models:mlp``"""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def save_causal_lm(folder, layers=6):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(WORDS) + 2, hidden_size=16, intermediate_size=24,
                                   num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=64, pad_token_id=0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder


def save_classifier(folder, classes=3):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(WORDS) + 2, hidden_size=16, intermediate_size=24,
                                   num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=64, num_labels=classes, pad_token_id=0)
    transformers.LlamaForSequenceClassification(cfg).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


TEXTS = [{"text": "the cat sat on a mat"}, {"text": "a dog ran far away"}, {"text": "the sky is blue"},
         {"text": "grass is green"}, {"text": "the red cat ran"}]
QA = [{"question": "what is the sky", "answer": "blue"}, {"question": "who sat on a mat", "answer": "the cat"},
      {"question": "what is grass", "answer": "green"}]
LABELLED = [{"text": "the cat sat", "label": 0}, {"text": "a dog ran far", "label": 1}, {"text": "sky is blue", "label": 2},
            {"text": "grass is green", "label": 2}]
