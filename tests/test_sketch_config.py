"""SketchConfig: defaults, validation with messages naming the setting, the JSON form."""

import pytest
import torch

from imu_fast import SketchConfig, gradient_sketches


def test_defaults_and_derived_settings():
    c = SketchConfig()
    assert (c.kind, c.dim, c.fisher, c.seed, c.blocks, c.k_in, c.k_out) == ("kronecker", 256, "full", 0, "layer", 16, 16)
    assert SketchConfig(kind="jl", dim=4096).blocks == "all"
    assert SketchConfig(dim=32, factors=(4, 8)).k_out == 8
    assert SketchConfig(dim=32, factors=[4, 8]).factors == (4, 8)


@pytest.mark.parametrize("config", [SketchConfig(), SketchConfig(kind="jl", dim=100, fisher="diagonal", seed=2**63 - 1),
                                    SketchConfig(dim=12, factors=(3, 4), other_dim=5, dtype="float64", blocks="all")])
def test_json_round_trip(config):
    assert SketchConfig.from_json(config.to_json()) == config
    assert SketchConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("kwargs,error,match", [
    ({"kind": "logra"}, ValueError, "kind must be one of"),
    ({"dim": 0}, ValueError, "dim must be an integer >= 1"),
    ({"dim": 2.0}, TypeError, "dim must be an integer"),
    ({"dim": 20}, ValueError, "dim=20 is not a square"),
    ({"dim": 16, "factors": (3, 5)}, ValueError, "do not multiply to dim=16"),
    ({"dim": 16, "factors": (4,)}, TypeError, "factors must be a pair"),
    ({"kind": "jl", "factors": (2, 2), "dim": 4}, ValueError, "applies to kind='kronecker' only"),
    ({"kind": "jl", "blocks": "layer"}, ValueError, "blocks must be 'all'"),
    ({"fisher": "kfac"}, ValueError, "fisher must be one of"),
    ({"blocks": "model"}, ValueError, "blocks must be one of"),
    ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
    ({"seed": 2**63}, ValueError, "at most 2\\^63 - 1"),
    ({"seed": True}, TypeError, "seed must be an integer"),
    ({"other_dim": 0}, ValueError, "other_dim must be"),
    ({"dtype": "float16"}, ValueError, "dtype must be one of"),
])
def test_bad_settings_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        SketchConfig(**kwargs)


def test_unknown_settings_are_refused():
    with pytest.raises(TypeError, match="unknown sketch settings"):
        SketchConfig.from_dict({"dim": 16, "rank": 4})
    with pytest.raises(TypeError, match="unknown sketch settings"):
        SketchConfig().replace(rank=3)


def test_precision_is_validated_saved_and_sets_the_jl_kernels():
    with pytest.raises(ValueError, match="precision"):
        SketchConfig(precision="fp8")
    config = SketchConfig(kind="jl", dim=64, precision="bf16")
    assert SketchConfig.from_json(config.to_json()) == config
    assert "precision" in config.sketch_settings()  # a saved set made at another precision is not reused
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 40), torch.nn.Tanh(), torch.nn.Linear(40, 3))
    data = (torch.randn(32, 300), torch.randint(0, 3, (32,)))
    exact = gradient_sketches(model, None, data, config=config.replace(precision="ieee"), backend="cpu").sketches
    fast = gradient_sketches(model, None, data, config=config, backend="cpu").sketches
    err = float((fast - exact).norm() / exact.norm())
    assert err < 8e-3  # bfloat16 rows: far below the projection's own distortion (1/sqrt(64))
    from imu_fast._native import native

    if native.jl_amx_available():  # the setting reached the kernel: its rows were rounded to bfloat16
        assert err > 1e-5
