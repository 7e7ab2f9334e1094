"""``imu-fast unlearn`` and ``imu-fast influence``: models and forget sets from files, results to
files, and one clear line (exit status 2) for every bad file."""

import json

import pytest
import torch

import cli_models
from imu_fast import load_stage
from imu_fast.cli import main
from imu_fast.scripts.commands import default_layers

transformers = pytest.importorskip("transformers")


def run(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch")
    model = cli_models.mlp()
    torch.save(model.state_dict(), folder / "state.pt")
    torch.save(model, folder / "module.pt")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 6, generator=g), torch.randint(0, 3, (24,), generator=g)
    torch.save((x, y), folder / "forget.pt")
    torch.save({"x": x, "y": y}, folder / "forget_dict.pt")
    return folder, x, y


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    return cli_models.save_causal_lm(tmp_path_factory.mktemp("lm"))


def test_unlearn_a_state_dict_checkpoint(classifier_files, tmp_path, capsys):
    folder, x, y = classifier_files
    out = tmp_path / "out"
    status, text, err = run(["unlearn", "--model", str(folder / "state.pt"), "--model-class", "cli_models:mlp",
                             "--forget", str(folder / "forget.pt"), "--out", str(out), "--method", "ga", "--epochs",
                             "2", "--batch-size", "8", "--stop-forget-accuracy", "0.2", "--no-progress"], capsys)
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "ga" and report["n_forget"] == 24 and report["steps"] > 0
    assert report["forget_kind"] == "tensors" and report["written"] == str(out / "model.pt")
    model = cli_models.mlp()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))  # written back as a state dict
    before = cli_models.mlp()
    assert not torch.equal(model[0].weight, before[0].weight)
    assert "unlearned 24 samples with ga" in text


def test_unlearn_a_pickled_module_needs_trust(classifier_files, tmp_path, capsys):
    folder, _, _ = classifier_files
    argv = ["unlearn", "--model", str(folder / "module.pt"), "--forget", str(folder / "forget_dict.pt"),
            "--out", str(tmp_path / "out"), "--epochs", "1", "--no-progress", "--top-fraction", "1"]
    status, _, err = run(argv, capsys)
    assert status == 2 and "pass --trust-checkpoint if you trust it" in err and "module.pt" in err
    status, _, err = run(argv + ["--trust-checkpoint"], capsys)
    assert status == 0, err
    assert isinstance(torch.load(tmp_path / "out" / "model.pt", weights_only=False), torch.nn.Module)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["trained"] == ["2.weight", "2.bias"] and report["n_kept"] > 0  # IMU: the head only


def test_unlearn_a_causal_lm_folder_from_texts_and_from_questions(lm_folder, tmp_path, capsys):
    for name, records in (("texts", cli_models.TEXTS), ("qa", cli_models.QA)):
        forget = cli_models.write_jsonl(tmp_path / f"{name}.jsonl", records)
        out = tmp_path / f"out_{name}"
        status, _, err = run(["unlearn", "--model", str(lm_folder), "--forget", str(forget), "--out", str(out),
                              "--epochs", "2", "--batch-size", "2", "--lr", "0.05", "--top-fraction", "1",
                              "--optimizer", "adamw", "--no-progress"], capsys)
        assert status == 0, err
        report = json.loads((out / "report.json").read_text())
        assert report["forget_kind"] == ("text" if name == "texts" else "question/answer")
        assert report["targets"] == [f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (1, 2, 3)
                                     for p in ("q", "k", "v", "o")]  # 6 layers: 1-3, ending two below the top
        assert report["config"]["optimizer"] == "adamw"
        unlearned = transformers.AutoModelForCausalLM.from_pretrained(out)
        original = transformers.AutoModelForCausalLM.from_pretrained(lm_folder)
        assert not torch.equal(unlearned.model.layers[1].self_attn.q_proj.weight,
                               original.model.layers[1].self_attn.q_proj.weight)
        assert torch.equal(unlearned.model.layers[4].self_attn.q_proj.weight,
                           original.model.layers[4].self_attn.q_proj.weight)  # not an influence parameter
        assert (out / "tokenizer.json").is_file()


def test_influence_writes_scores_and_weights(tmp_path, capsys):
    folder = cli_models.save_classifier(tmp_path / "cls")
    forget = cli_models.write_jsonl(tmp_path / "forget.jsonl", cli_models.LABELLED)
    out = tmp_path / "out"
    status, text, err = run(["influence", "--model", str(folder), "--forget", str(forget), "--out", str(out),
                             "--top-fraction", "0.5", "--no-progress"], capsys)
    assert status == 0, err
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0] == "index,score,weight" and len(rows) == 5
    weights = load_stage(out, "weights", settings={"damping": 0.01, "top_fraction": 0.5, "clip_quantile": 0.93,
                                                   "targets": None}).tensors["weights"]
    scores = load_stage(out, "influence", settings={"route": "head", "head": "auto", "targets": None, "loss_fn": None,
                                                    "damping": 0.01, "dtype": None}).tensors["scores"]
    assert scores.shape == weights.shape == (4,) and [float(r.split(",")[2]) for r in rows[1:]] == weights.tolist()
    assert "scored 4 samples through score" in text


def test_influence_of_a_causal_lm_through_chosen_layers(lm_folder, tmp_path, capsys):
    forget = cli_models.write_jsonl(tmp_path / "qa.jsonl", cli_models.QA)
    status, text, err = run(["influence", "--model", str(lm_folder), "--forget", str(forget), "--out",
                             str(tmp_path / "out"), "--layers", "4", "5", "--no-progress"], capsys)
    assert status == 0, err
    header = json.loads((tmp_path / "out" / "influence.json").read_text())
    assert header["settings"]["targets"] == [f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (4, 5)
                                             for p in ("q", "k", "v", "o")]
    assert header["settings"]["loss_fn"] == "imu_fast.lm.causal_lm_losses"
    assert len((tmp_path / "out" / "scores.csv").read_text().splitlines()) == 4


def test_default_layers_follow_the_authors_choice():
    assert default_layers(24) == [19, 20, 21] and default_layers(30) == [25, 26, 27] and default_layers(6) == [1, 2, 3]
    assert default_layers(4) == [1, 2, 3] and default_layers(2) == [0, 1]


def bad(argv, capsys, *fragments):
    status, _, err = run(argv, capsys)
    assert status == 2, err
    assert err.startswith("imu-fast ") and ": error: " in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_bad_model_files(classifier_files, tmp_path, capsys):
    folder, _, _ = classifier_files
    forget = str(folder / "forget.pt")

    def argv(model, *extra):
        return ["unlearn", "--model", str(model), "--forget", forget, "--out", str(tmp_path / "o"), "--no-progress", *extra]

    bad(argv(tmp_path / "nothing"), capsys, "nothing: no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad(argv(empty), capsys, "not a Hugging Face save_pretrained folder (it has no config.json)")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{broken")
    bad(argv(tmp_path / "cfg"), capsys, "config.json: cannot be read as a model config")
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaModel"]}))
    bad(argv(tmp_path / "cfg"), capsys, "neither a causal language model", "LlamaModel")
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    bad(argv(tmp_path / "cfg"), capsys, "has no model weights")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    bad(argv(tmp_path / "junk.pt"), capsys, "junk.pt: is not a torch checkpoint")
    bad(argv(folder / "state.pt"), capsys, "holds a state dict: pass --model-class")
    bad(argv(folder / "state.pt", "--model-class", "cli_models"), capsys, "--model-class must look like")
    bad(argv(folder / "state.pt", "--model-class", "cli_models:nope"), capsys, "cannot be imported")
    torch.save({"0.weight": torch.ones(2, 2)}, tmp_path / "wrong.pt")
    bad(argv(tmp_path / "wrong.pt", "--model-class", "cli_models:mlp"), capsys, "does not fit the model built by")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    bad(argv(tmp_path / "list.pt", "--model-class", "cli_models:mlp"), capsys, "holds a list, not an nn.Module")


def test_bad_forget_files(classifier_files, lm_folder, tmp_path, capsys):
    folder, x, y = classifier_files

    def argv(forget, model=lm_folder, *extra):
        return ["unlearn", "--model", str(model), "--forget", str(forget), "--out", str(tmp_path / "o"), "--no-progress",
                *extra]

    def jsonl(name, text):
        path = tmp_path / name
        path.write_text(text)
        return path

    bad(argv(tmp_path / "missing.jsonl"), capsys, "missing.jsonl: no such file")
    bad(argv(jsonl("f.csv", "a,b\n")), capsys, "unknown kind of file '.csv'")
    bad(argv(jsonl("empty.jsonl", "\n\n")), capsys, "holds no sample")
    bad(argv(jsonl("broken.jsonl", '{"text": "a"}\n{"text": \n')), capsys, "line 2 is not valid JSON")
    bad(argv(jsonl("list.jsonl", '["a"]\n')), capsys, "line 1 is a JSON list, not an object")
    bad(argv(jsonl("mixed.jsonl", '{"text": "a cat"}\n\n{"question": "who", "answer": "cat"}\n')), capsys,
        "line 3 is a question/answer sample but line 1 a text one")
    bad(argv(jsonl("half.jsonl", '{"question": "who"}\n')), capsys, "line 1 lacks 'answer'")
    bad(argv(jsonl("blank.jsonl", '{"text": "  "}\n')), capsys, "line 1: 'text' must be a non-empty string")
    bad(argv(jsonl("short.jsonl", '{"text": "cat"}\n')), capsys, "line 1: nothing to predict after tokenising")
    bad(argv(jsonl("labels.jsonl", '{"text": "a cat", "label": 1}\n')), capsys,
        "holds text/label samples, but the model is a causal-lm")
    bad(argv(jsonl("neg.jsonl", '{"text": "a cat", "label": -1}\n')), capsys, "'label' must be a class index")
    bad(argv(jsonl("ok.jsonl", '{"text": "a cat sat"}\n'), folder / "state.pt", "--model-class", "cli_models:mlp"),
        capsys, "texts need a Hugging Face model folder with its tokenizer")
    classifier = cli_models.save_classifier(tmp_path / "cls", classes=2)
    bad(argv(jsonl("big.jsonl", '{"text": "a cat", "label": 0}\n{"text": "a dog", "label": 5}\n'), classifier), capsys,
        "lines [2] have labels >= 2")
    torch.save({"a": torch.ones(3)}, tmp_path / "keys.pt")
    bad(argv(tmp_path / "keys.pt", folder / "state.pt", "--model-class", "cli_models:mlp"), capsys,
        "holds a dict with keys ['a']")
    torch.save((x, y), tmp_path / "xy.pt")
    bad(argv(tmp_path / "xy.pt"), capsys, "holds (X, Y) tensors, but the model is a causal language model")
    torch.save("text", tmp_path / "str.pt")
    bad(argv(tmp_path / "str.pt"), capsys, "holds a str; give a pair (X, Y)")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    bad(argv(tmp_path / "junk.pt"), capsys, "junk.pt: cannot be read as tensors saved with torch.save")
    torch.save((x, y[:5]), tmp_path / "short.pt")
    bad(argv(tmp_path / "short.pt", folder / "state.pt", "--model-class", "cli_models:mlp"), capsys,
        "columns disagree on the number of samples")
    bad2 = y.clone()
    bad2[4] = 7
    torch.save((x, bad2), tmp_path / "label.pt")
    bad(argv(tmp_path / "label.pt", folder / "state.pt", "--model-class", "cli_models:mlp", "--method", "ga"), capsys,
        "labels out of range [0, 3) at forget-set indices [4]")


def test_bad_outputs_and_settings(classifier_files, lm_folder, tmp_path, capsys):
    folder, _, _ = classifier_files
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    base = ["unlearn", "--model", str(folder / "state.pt"), "--model-class", "cli_models:mlp", "--forget",
            str(folder / "forget.pt")]
    base += ["--no-progress"]
    bad(base + ["--out", str(used)], capsys, "exists and is not an empty folder")
    bad(base + ["--out", str(tmp_path / "o"), "--method", "ga", "--layers", "1"], capsys,
        "method 'ga' has none")
    bad(base + ["--out", str(tmp_path / "o2"), "--layers", "1"], capsys, "--layers picks decoder layers")
    forget = cli_models.write_jsonl(tmp_path / "t.jsonl", cli_models.TEXTS)
    bad(["unlearn", "--model", str(lm_folder), "--forget", str(forget), "--out", str(tmp_path / "o3"), "--method", "rl",
         "--no-progress"], capsys, "method 'rl' relabels classification data")
    bad(["unlearn", "--model", str(lm_folder), "--forget", str(forget), "--out", str(tmp_path / "o4"), "--no-progress",
         "--stop-forget-accuracy", "0.1"], capsys, "forget_accuracy_at_most needs classification data")
    with pytest.raises(SystemExit) as exc:
        main(base + ["--out", str(tmp_path / "o5"), "--top-fraction", "2"])
    assert exc.value.code == 2 and "expected a number in [0, 1]" in capsys.readouterr().err
