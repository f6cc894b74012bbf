"""Models: every input size builds, parameter groups cover each parameter exactly once, adapters start as identity."""
from __future__ import annotations

import pytest
import torch

from pcl.models import build_model, num_params, param_names


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", ["linear", "mlp", "cnn"])
def test_models_build_for_every_input_size(name, shape):
    model = build_model({"name": name}, shape, 10)
    assert model(torch.zeros(4, *shape)).shape == (4, 10)


@pytest.mark.parametrize("spec", [{"name": "mlp", "hidden": [32, 32], "adapter_dim": 8}, {"name": "cnn", "adapter": True}, {"name": "linear"}])
def test_groups_partition_the_parameters(spec):
    model = build_model(spec, (1, 8, 8), 10)
    groups = model.param_groups()
    members = [n for names in groups.values() for n in names]
    assert sorted(members) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    assert groups["head"], "every model has an output layer"
    if spec["name"] != "linear":
        assert groups["input"] and groups["adapter"] and groups["body"]
        assert num_params(model, groups["adapter"]) < num_params(model, param_names(model, "all")) / 2


@pytest.mark.parametrize("name,spec", [("mlp", {"adapter_dim": 8}), ("cnn", {"adapter": True})])
def test_adapters_start_as_identity(name, spec):
    torch.manual_seed(0)
    plain = build_model({"name": name}, (1, 8, 8), 10)
    adapted = build_model({"name": name, **spec}, (1, 8, 8), 10)
    shared = {n: p for n, p in plain.state_dict().items()}
    adapted.load_state_dict(shared, strict=False)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(adapted(x), plain(x))


def test_bad_model_specs_are_named():
    with pytest.raises(ValueError, match="resnet"):
        build_model({"name": "resnet"}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="depth"):
        build_model({"name": "mlp", "depth": 3}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="image inputs"):
        build_model({"name": "cnn"}, (64,), 10)
    model = build_model({"name": "mlp"}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="adapterz"):
        param_names(model, "adapterz")


FEDAVG_CNN = {"name": "cnn", "channels": [32, 64], "hidden": [512], "kernel": 5, "padding": 0}


def test_cnn_config_expresses_pfllib_fedavg_cnn():
    """PFLlib's MNIST FedAvgCNN: conv(1->32, 5) pool conv(32->64, 5) pool, 1024 -> 512 -> 10."""
    model = build_model(FEDAVG_CNN, (1, 28, 28), 10)
    conv = lambda cin, cout, k: cin * cout * k * k + cout  # noqa: E731
    lin = lambda a, b: a * b + b  # noqa: E731
    side = ((28 - 5 + 1) // 2 - 5 + 1) // 2  # 4: the flattened map is 64 * 4 * 4 = 1024
    expected = conv(1, 32, 5) + conv(32, 64, 5) + lin(64 * side * side, 512) + lin(512, 10)
    assert expected == 582_026
    assert num_params(model, param_names(model, "all")) == expected
    assert [n for n, _ in model.named_parameters()] == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                                       "fc1.weight", "fc1.bias", "head.weight", "head.bias"]
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_default_cnn_keeps_its_parameter_names_and_shapes(shape):
    """Checkpoints and parameter groups name these, so the default model must not change."""
    model = build_model({"name": "cnn", "adapter": True}, shape, 10)
    k, pad = (3, 1) if shape[1] < 16 else (5, 0)
    side = shape[1]
    for _ in range(2):
        side = (side + 2 * pad - k + 1) // 2
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert list(shapes) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                            "adapter1.conv.weight", "adapter1.conv.bias", "adapter2.conv.weight", "adapter2.conv.bias",
                            "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "head.weight", "head.bias"]
    assert shapes["conv1.weight"] == (6, shape[0], k, k) and shapes["conv2.weight"] == (16, 6, k, k)
    assert shapes["fc1.weight"] == (120, 16 * side * side) and shapes["fc2.weight"] == (84, 120)
    assert shapes["head.weight"] == (10, 84)
    groups = model.param_groups()
    assert groups["input"] == ["conv1.weight", "conv1.bias"] and groups["head"] == ["head.weight", "head.bias"]
    assert groups["adapter"] == [n for n in shapes if n.startswith("adapter")]


@pytest.mark.parametrize("channels,hidden", [([8], []), ([4, 8, 8], [16]), ([8, 8], [32, 16, 8])])
def test_cnn_depths_are_configurable(channels, hidden):
    spec = {"name": "cnn", "channels": channels, "hidden": hidden, "kernel": 3, "padding": 1, "adapter": True}
    model = build_model(spec, (1, 28, 28), 10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    names = [n for n, _ in model.named_parameters()]
    weights = [n for n in names if n.endswith(".weight") and not n.startswith("adapter")]
    assert weights == [f"conv{i + 1}.weight" for i in range(len(channels))] + [
        f"fc{i + 1}.weight" for i in range(len(hidden))] + ["head.weight"]
    groups = model.param_groups()
    assert groups["input"] == ["conv1.weight", "conv1.bias"] and groups["head"] == ["head.weight", "head.bias"]
    assert len(groups["adapter"]) == 2 * len(channels)


def test_bad_cnn_shapes_are_named():
    with pytest.raises(ValueError, match="too small"):
        build_model({"name": "cnn", "channels": [4, 4, 4, 4]}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="at least one convolution"):
        build_model({"name": "cnn", "channels": []}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="kernel"):
        build_model({"name": "cnn", "kernel": 0}, (1, 28, 28), 10)


def test_schema_accepts_the_cnn_options():
    import jsonschema
    import yaml

    from pcl.config import SCHEMAS

    schema = yaml.safe_load((SCHEMAS / "experiment.schema.yaml").read_text())["properties"]["model"]
    check = jsonschema.Draft202012Validator(schema)
    assert not list(check.iter_errors(FEDAVG_CNN))
    assert not list(check.iter_errors({"name": "cnn", "channels": [8, 8, 8], "hidden": []}))
    assert list(check.iter_errors({"name": "cnn", "channels": []}))
    assert list(check.iter_errors({"name": "cnn", "padding": -1}))
    assert list(check.iter_errors({"name": "cnn", "kernel": 0}))
