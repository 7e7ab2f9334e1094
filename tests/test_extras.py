"""The light core install: torch, numpy, tqdm and safetensors suffice for the library, and each
optional dependency missing is an ImportError naming the extra that brings it."""

import subprocess
import sys

import pytest

CORE_ONLY = """
import importlib.util, sys

# As if the extras were not installed: importing them fails, and looking them up finds nothing.
MISSING = ("sklearn", "matplotlib", "transformers", "peft")
for name in MISSING:
    sys.modules[name] = None
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in MISSING else real_find_spec(name, *a)
import torch
import imu_fast
from imu_fast import StopCriteria, fisher_diagonal, influence_scores, per_sample_grad_norms, unlearn

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
assert influence_scores(model, (x, y)).scores.shape == (20,)
fisher_diagonal(model, None, (x, y))
report = unlearn(model, (x, y), method="imu", top_fraction=1.0, stop=StopCriteria(max_steps=2))
assert report.steps == 2
try:
    from imu_fast.data import load_digits_split
    load_digits_split()
except ImportError as exc:
    assert 'pip install "imu-fast[eval]"' in str(exc), exc
else:
    raise AssertionError("the digits loaded without scikit-learn")
print("core ok")
"""


def test_the_core_works_without_any_extra():
    run = subprocess.run([sys.executable, "-c", CORE_ONLY], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "core ok" in run.stdout


def _missing(monkeypatch, *modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


def test_the_digits_name_the_eval_extra(monkeypatch):
    from imu_fast.data import load_digits_split

    _missing(monkeypatch, "sklearn", "sklearn.datasets", "sklearn.model_selection")
    with pytest.raises(ImportError, match=r'the handwritten digits needs sklearn \(scikit-learn\).*imu-fast\[eval\]'):
        load_digits_split()


def test_mia_names_the_eval_extra(monkeypatch):
    import numpy as np

    from imu_fast.metrics import mia_from_features

    _missing(monkeypatch, "sklearn", "sklearn.svm")
    with pytest.raises(ImportError, match=r'MIA-Efficacy needs sklearn.*pip install "imu-fast\[eval\]"'):
        mia_from_features(np.ones(3), np.ones(3), np.zeros(3))


def test_the_studies_name_their_extras(monkeypatch, tmp_path):
    import numpy as np

    from imu_fast.studies import lm_metrics, lm_model, vision_plots

    _missing(monkeypatch, "matplotlib", "sklearn", "sklearn.metrics", "transformers")
    with pytest.raises(ImportError, match=r'plots needs matplotlib.*imu-fast\[studies\]'):
        vision_plots.plot_scenario({"scenarios": {"random": "x"}}, "random", tmp_path)
    with pytest.raises(ImportError, match=r'imu-fast\[studies\]'):
        lm_metrics.mia_auc(np.ones(3), np.zeros(3))
    with pytest.raises(ImportError, match=r'the language-model study needs transformers.*imu-fast\[hf\]'):
        lm_model.tiny_llama(10)


def test_a_command_missing_an_extra_says_which_in_one_line(monkeypatch, capsys):
    from imu_fast.cli import main

    _missing(monkeypatch, "sklearn", "sklearn.datasets", "sklearn.model_selection")
    assert main(["demo", "--no-cache", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == 'imu-fast: error: the handwritten digits needs sklearn (scikit-learn), which is not installed: ' \
                  'pip install "imu-fast[eval]"\n'
