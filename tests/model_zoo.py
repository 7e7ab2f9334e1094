"""Tiny models built from real architectures' configs (random weights, offline), and their data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

VOCAB = 40


def token_sequences(n=6, t=8, vocab=VOCAB, seed=0, classes=None):
    """Padded sequences of different lengths (sample 0 is full length), with causal-LM labels, or
    class labels if ``classes`` is given. Padding uses token 0 and attention mask 0."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        length = int(torch.randint(3, t + 1, (1,), generator=g)) if i else t
        mask = (torch.arange(t) < length).long()
        ids = torch.randint(1, vocab, (t,), generator=g).masked_fill(mask == 0, 0)
        if classes is None:
            labels = ids.masked_fill(mask == 0, -100)
        else:
            labels = torch.randint(0, classes, (), generator=g)
        samples.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return samples


def gpt2_lm(seed=0):
    """GPT-2: learned position embeddings called with position ids (1, T), lm_head tied to wte."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=8, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).double().eval()


def tied_llama_lm(seed=0):
    """Llama with tie_word_embeddings (as Llama-3.2 and SmolLM2)."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).double().eval()


def bert_classifier(seed=0, classes=3):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=12, max_position_embeddings=16, num_labels=classes)
    return transformers.BertForSequenceClassification(cfg).double().eval()


def llama_classifier(seed=0, classes=3):
    """LlamaForSequenceClassification: logits are the score head's rows at the last non-pad token."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                   num_labels=classes, pad_token_id=0)
    return transformers.LlamaForSequenceClassification(cfg).double().eval()


def vit_classifier(seed=0, classes=4):
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=12, num_labels=classes)
    return transformers.ViTForImageClassification(cfg).double().eval()


class EncoderClassifier(nn.Module):
    """nn.TransformerEncoder (nn.MultiheadAttention inside) over embeddings, masked mean pooling."""

    def __init__(self, batch_first=True, layers=2, classes=3):
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(VOCAB, 8)
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=12, dropout=0.1, batch_first=batch_first)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(8, classes)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.enc(h, src_key_padding_mask=attention_mask == 0)
        if not self.batch_first:
            h = h.transpose(0, 1)
        mask = attention_mask[..., None].to(h.dtype)
        return self.head((h * mask).sum(1) / mask.sum(1))


class CrossAttentionClassifier(nn.Module):
    """nn.MultiheadAttention with distinct query and key/value inputs of other widths (kdim, vdim)."""

    def __init__(self, classes=3, same_kv=False):
        super().__init__()
        self.same_kv = same_kv
        self.emb = nn.Embedding(VOCAB, 8)
        kdim = 8 if same_kv else 6
        self.kv = nn.Linear(8, kdim)
        self.vv = nn.Linear(8, 5)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True) if same_kv else \
            nn.MultiheadAttention(8, 2, kdim=kdim, vdim=5, batch_first=True)
        self.head = nn.Linear(8, classes)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        memory = torch.tanh(self.kv(h))
        value = memory if self.same_kv else torch.tanh(self.vv(h))
        out, _ = self.attn(h[:, :3], memory, value, key_padding_mask=attention_mask == 0, need_weights=True)
        return self.head(out.mean(1))


def encoder_classifier(seed=0, batch_first=True):
    torch.manual_seed(seed)
    return EncoderClassifier(batch_first).double().eval()


def cross_attention_classifier(seed=0, same_kv=False):
    torch.manual_seed(seed)
    return CrossAttentionClassifier(same_kv=same_kv).double().eval()


def lora_llama(seed=0):
    """A tied Llama wrapped by PEFT's LoRA on q/v (frozen base layers, trainable lora_A / lora_B)."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tied_llama_lm(seed), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                                    lora_dropout=0.0)).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # PEFT starts lora_B at zero: give the adapters a gradient path
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return model.eval()
