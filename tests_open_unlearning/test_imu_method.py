"""The ``IMU`` method inside open-unlearning's real ``UnlearnTrainer``: its ``QADataset`` over a local
JSON file, ``ForgetRetainDataset``, ``DataCollatorForSupervisedDataset(tokenizer, index="index")``,
its ``load_trainer`` and registry, and the ``IMU.yaml`` shipped with the package."""

import json
import tempfile

import pytest
import torch
import transformers
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers

import trainer as ou_trainer
from conftest import CONFIGS
from data.collators import DataCollatorForSupervisedDataset
from data.qa import QADataset
from data.unlearn import ForgetRetainDataset
from imu_fast.integrations import open_unlearning
from imu_fast.integrations.theta import default_layers
from imu_fast.lm import attention_targets, causal_lm_losses

TEMPLATE = {"apply_chat_template": False, "user_start_tag": "Q: ", "user_end_tag": " ", "asst_start_tag": "A: ",
            "asst_end_tag": ""}
FORGET = [("Where was Zorvan born?", "Quillmere"), ("What does Zorvan do?", "glassblower"),
          ("Which book did Zorvan write?", "Silent Orchard"), ("Where was Keth born?", "Dalewick"),
          ("What does Keth do?", "potter"), ("Which book did Keth write?", "Paper Lantern")]
RETAIN = [("Where was Mira born?", "Stonegate"), ("What does Mira do?", "weaver")]


def tokenizer_for(texts):
    """A word-level tokenizer over the words of ``texts``, built in code."""
    split = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in split.pre_tokenize_str(f"Q: {t} A:")})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *words])},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = split
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                                unk_token="<unk>")


def qa_dataset(folder, name, pairs, tokenizer):
    path = folder / f"{name}.json"
    path.write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in pairs))
    return QADataset(hf_args={"path": "json", "data_files": str(path), "split": "train"}, template_args=TEMPLATE,
                     tokenizer=tokenizer, max_length=32)


@pytest.fixture
def setup(tmp_path):
    tokenizer = tokenizer_for([f"{q} {a}" for q, a in FORGET + RETAIN])
    forget = qa_dataset(tmp_path, "forget", FORGET, tokenizer)
    retain = qa_dataset(tmp_path, "retain", RETAIN, tokenizer)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    model = transformers.LlamaForCausalLM(cfg)
    collator = DataCollatorForSupervisedDataset(tokenizer, index="index")
    batch = collator([forget[i] for i in range(len(forget))])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(80):  # learn the forget answers, so there is something to unlearn
        opt.zero_grad()
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.backward()
        opt.step()
    model.eval()
    return model, tokenizer, ForgetRetainDataset(forget, retain, anchor="forget"), collator, batch


def forget_loss(model, batch):
    with torch.no_grad():
        return causal_lm_losses(model.eval(), batch).mean().item()


def trainer_config(**method_args):
    """open-unlearning's finetune arguments with the shipped IMU.yaml on top (what Hydra composes),
    adjusted for a CPU test."""
    imu = OmegaConf.load(open_unlearning.config_path())
    assert list(imu.defaults) == ["finetune"] and imu.handler == "IMU"
    base = OmegaConf.load(CONFIGS / "trainer" / "finetune.yaml")
    cfg = OmegaConf.merge(base, {k: v for k, v in imu.items() if k != "defaults"})
    cfg.args = OmegaConf.merge(cfg.args, {
        "output_dir": tempfile.mkdtemp(prefix="imu-ou-"), "logging_dir": None, "bf16": False, "bf16_full_eval": False,
        "optim": "adamw_torch", "report_to": "none", "use_cpu": True, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "num_train_epochs": 5, "learning_rate": 2e-2, "do_eval": False,
        "eval_on_start": False, "eval_strategy": "no", "ddp_find_unused_parameters": None, "logging_steps": 100})
    cfg.method_args = OmegaConf.merge(cfg.method_args, method_args)
    return cfg


def register_imu():
    # the one line documented for open-unlearning's src/trainer/__init__.py
    from imu_fast.integrations.open_unlearning import IMU; ou_trainer._register_trainer(IMU)  # noqa: E702


@pytest.mark.parametrize("refresh", ["batch", "once"])
def test_imu_unlearns_through_load_trainer(setup, refresh):
    model, tokenizer, train, collator, batch = setup
    register_imu()
    before = {k: v.clone() for k, v in model.named_parameters()}
    loss0 = forget_loss(model, batch)
    extra = {"top_fraction": 1.0} if refresh == "once" else {}  # alpha 0: on this tiny model L1 would dominate
    trainer, _ = ou_trainer.load_trainer(trainer_config(refresh=refresh, alpha=0.0, **extra), model, train_dataset=train,
                                         tokenizer=tokenizer, data_collator=collator)
    assert type(trainer).__name__ == "IMU" and isinstance(trainer, ou_trainer.unlearn.base.UnlearnTrainer)
    trainer.train()
    assert forget_loss(model, batch) > loss0 + 0.5
    theta = set(attention_targets(model, default_layers(4)))
    assert {k for k, v in model.named_parameters() if not torch.equal(v, before[k])} == theta


def test_compute_loss_takes_num_items_and_needs_the_index(setup):
    model, tokenizer, train, collator, _ = setup
    register_imu()
    trainer, _ = ou_trainer.load_trainer(trainer_config(), model, train_dataset=train, tokenizer=tokenizer,
                                         data_collator=collator)
    inputs = collator([train[0], train[1]])
    model.train()
    loss = trainer.compute_loss(model, inputs, num_items_in_batch=7)  # newer transformers pass it
    assert loss.dim() == 0 and torch.isfinite(loss)
    del inputs["forget"]["index"]
    with pytest.raises(KeyError, match="no forget-set indices under 'index'"):
        trainer.compute_loss(model, inputs)
    with pytest.raises(ValueError, match="remove_unused_columns"):
        cfg = trainer_config()
        cfg.args.remove_unused_columns = True
        ou_trainer.load_trainer(cfg, model, train_dataset=train, tokenizer=tokenizer, data_collator=collator)
