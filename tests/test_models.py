"""Models: every input size builds, parameter groups (disjoint for the small nets, the official split for the
ResNet), adapters start as identity, the paper's ResNet-18 counts, training under the engine, the norm option."""
from __future__ import annotations

import copy

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


# --- ResNet-18 (GroupNorm) of Pillutla et al. 2022 ---------------------------------------------------------------

def _resnet18_counts(classes: int, in_channels: int = 1) -> dict[str, int]:
    """Parameter counts from the architecture alone: a 3x3 stem (64 channels, no bias) + GroupNorm, four stages of two
    basic blocks (3x3 convs without bias, each followed by a GroupNorm; a 1x1 projection + GroupNorm where the width
    changes), a linear head; an adapter is a GroupNorm + a bias-free 1x1 conv after each 3x3 conv of a block."""
    gn = lambda c: 2 * c  # noqa: E731
    stem = in_channels * 64 * 9 + gn(64)
    body, adapters, block_norms, cin = 0, 0, 0, 64
    for width in (64, 128, 256, 512):
        for b in range(2):
            c_in = cin if b == 0 else width
            body += c_in * width * 9 + width * width * 9 + 2 * gn(width)
            if c_in != width:
                body += c_in * width + gn(width)
            adapters += 2 * (gn(width) + width * width)
            block_norms += 2 * gn(width)
        cin = width
    head = 512 * classes + classes
    # the official 'adapter' predicate ('adapter' | 'bn1' | 'bn2' in the name) also takes the stem's bn1
    return {"input": stem, "head": head, "adapter": adapters + block_norms + gn(64), "full": stem + body + head}


def test_resnet18_gn_has_the_papers_parameter_counts():
    expected = _resnet18_counts(62)
    assert expected == {"input": 704, "head": 31_806, "adapter": 1_408_128, "full": 11_199_486}  # the paper's table
    plain = build_model({"name": "resnet18_gn"}, (1, 28, 28), 62)
    adapted = build_model({"name": "resnet18_gn", "adapter": True}, (1, 28, 28), 62)
    assert num_params(plain, param_names(plain, "all")) == expected["full"]
    for group in ("input", "head"):
        assert num_params(plain, param_names(plain, group)) == expected[group] == num_params(
            adapted, param_names(adapted, group))
    assert num_params(adapted, param_names(adapted, "adapter")) == expected["adapter"]
    assert param_names(plain, "adapter") == []
    groups = adapted.param_groups()
    assert set(groups["input"]) & set(groups["adapter"]) == {"bn1.weight", "bn1.bias"}  # as the official split
    assert not set(groups["body"]) & {n for g in ("input", "head", "adapter", "norm") for n in groups[g]}
    gn_params = {f"{m}.{p}" for m, mod in adapted.named_modules() if isinstance(mod, torch.nn.GroupNorm)
                 for p in ("weight", "bias")}
    assert set(groups["norm"]) == gn_params
    assert adapted(torch.zeros(2, 1, 28, 28)).shape == (2, 62)


def _reinit(model: torch.nn.Module) -> None:
    """What Context.init_params does: reset every layer, then zero-initialise the adapters."""
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for m in model.modules():
        if hasattr(m, "zero_init"):
            m.zero_init()


def test_resnet_adapters_start_as_identity():
    torch.manual_seed(0)
    plain = build_model({"name": "resnet18_gn", "norm_groups": 4}, (1, 16, 16), 5)
    adapted = build_model({"name": "resnet18_gn", "norm_groups": 4, "adapter": True}, (1, 16, 16), 5)
    _reinit(adapted)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), plain(x))
        block = adapted.layer2[1]
        h = torch.randn(3, 128, 8, 8)
        torch.testing.assert_close(block.adapter1(h), h)  # each adapter alone is the identity (not just up to a GN)


def test_resnet_init_is_the_official_kaiming_fan_out():
    torch.manual_seed(0)
    model = build_model({"name": "resnet18_gn"}, (1, 28, 28), 62)
    w = dict(model.named_parameters())["layer2.0.conv1.weight"]  # 128 x 64 x 3 x 3: fan-out 1152, fan-in 576
    expected_std = (2 / (128 * 9)) ** 0.5  # kaiming normal, fan_out = out_channels * k * k, ReLU gain sqrt(2)
    assert abs(w.std().item() / expected_std - 1) < 0.02
    assert abs(w.mean().item()) < 0.01 * expected_std


def test_resnet_bad_options_are_named():
    with pytest.raises(ValueError, match="norm_groups"):
        build_model({"name": "resnet18_gn", "norm_groups": 3}, (1, 28, 28), 62)
    with pytest.raises(ValueError, match="image inputs"):
        build_model({"name": "resnet18_gn"}, (784,), 62)


def _sgd_by_autograd(model, params, x, y, lr):
    """One SGD step on one client by plain autograd on a module holding ``params`` (the oracle for the engine)."""
    model = copy.deepcopy(model)
    model.load_state_dict(params, strict=False)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return {n: (p - lr * p.grad).detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize("spec,shape", [
    ({"name": "resnet18_gn", "adapter": True}, (1, 28, 28)),
    ({"name": "cnn", "norm": "group", "adapter": True}, (1, 8, 8)),
    ({"name": "mlp", "hidden": [16, 8], "norm": "layer"}, (1, 8, 8)),
])
def test_models_train_under_the_vectorized_engine(spec, shape):
    """A LocalTrainer step over 2 stacked clients (functional_call + vmap) equals one autograd SGD step each; with
    ``trainable`` = the adapter group (or the norm group), nothing else moves."""
    from pcl.data.types import ClientData
    from pcl.engine import LocalTrainer
    from pcl.engine.local import LocalSpec

    torch.manual_seed(0)
    model = build_model(spec, shape, 62)
    _reinit(model)
    g = torch.Generator().manual_seed(1)
    data = ClientData(torch.rand(2, 2, *shape, generator=g), torch.randint(0, 62, (2, 2), generator=g),
                      torch.tensor([2, 2]))
    base = {n: p.detach() for n, p in model.named_parameters()}
    stacked = {n: torch.stack([v, v + 0.01 * torch.randn(v.shape, generator=g)]) for n, v in base.items()}
    spec_sgd = LocalSpec(lr=0.1, batch_size=2, local_steps=1)
    out = LocalTrainer(model, backend="vectorized").train(stacked, data, torch.arange(2), spec_sgd,
                                                          generator=torch.Generator().manual_seed(2))
    for j in range(2):
        expected = _sgd_by_autograd(model, {n: v[j] for n, v in stacked.items()}, data.x[j], data.y[j], 0.1)
        for n in base:
            torch.testing.assert_close(out[n][j], expected[n], rtol=1e-4, atol=1e-5)
    group = "adapter" if spec.get("adapter") else "norm"
    names = param_names(model, group)
    part = LocalTrainer(model, backend="vectorized").train(stacked, data, torch.arange(2), spec_sgd, trainable=names,
                                                           generator=torch.Generator().manual_seed(2))
    assert any(not torch.equal(part[n], stacked[n]) for n in names)
    assert all(torch.equal(part[n], stacked[n]) for n in base if n not in names)


# --- the norm option ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_default_norm_adds_nothing(name):
    torch.manual_seed(0)
    default = build_model({"name": name}, (1, 8, 8), 10)
    torch.manual_seed(0)
    explicit = build_model({"name": name, "norm": "none"}, (1, 8, 8), 10)
    assert [n for n, _ in default.named_parameters()] == [n for n, _ in explicit.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(default.parameters(), explicit.parameters()))
    assert default.param_groups()["norm"] == []


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_norm_layers_normalise_and_form_the_norm_group(norm):
    """Before the ReLU each sample's hidden features (per group) have mean 0 and variance 1 (affine at its init);
    the norm group holds exactly their weights and biases."""
    model = build_model({"name": "cnn", "norm": norm, "channels": [16, 8], "hidden": [32]}, (1, 8, 8), 10)
    seen = {}
    for name in ("norm1", "norm2", "norm_fc1"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (m, o)))
    model(torch.rand(4, 1, 8, 8) * 5 + 3)
    for name, (module, out) in seen.items():
        groups = module.num_groups
        assert groups == {"layer": 1, "group": {"norm1": 2, "norm2": 1, "norm_fc1": 4}[name]}[norm]
        per_group = out.reshape(4, groups, -1)
        torch.testing.assert_close(per_group.mean(-1), torch.zeros(4, groups), atol=1e-4, rtol=0)
        torch.testing.assert_close(per_group.var(-1, unbiased=False), torch.ones(4, groups), atol=1e-2, rtol=0)
    norm_params = {f"{n}.{p}" for n in ("norm1", "norm2", "norm_fc1") for p in ("weight", "bias")}
    assert set(model.param_groups()["norm"]) == norm_params
    assert num_params(model, model.param_groups()["norm"]) == 2 * (16 + 8 + 32)
    mlp = build_model({"name": "mlp", "hidden": [84, 6], "norm": "group"}, (1, 8, 8), 10)
    assert [m.num_groups for m in mlp.norms] == [7, 1]  # largest divisor <= C // 8: 84 -> 7, 6 -> 1
    assert mlp.param_groups()["norm"] == ["norms.0.weight", "norms.0.bias", "norms.1.weight", "norms.1.bias"]


def test_bad_norms_are_named():
    with pytest.raises(ValueError, match="running statistics"):
        build_model({"name": "cnn", "norm": "batch"}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="unknown 'instance'"):
        build_model({"name": "mlp", "norm": "instance"}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="5 groups do not divide a layer of 6"):
        build_model({"name": "cnn", "norm": "group", "norm_groups": 5}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="only for norm 'group', not 'layer'"):
        build_model({"name": "mlp", "norm": "layer", "norm_groups": 2}, (1, 8, 8), 10)


def test_schema_accepts_the_resnet_and_norm_options():
    import jsonschema
    import yaml

    from pcl.config import SCHEMAS

    schema = yaml.safe_load((SCHEMAS / "experiment.schema.yaml").read_text())["properties"]["model"]
    check = jsonschema.Draft202012Validator(schema)
    assert not list(check.iter_errors({"name": "resnet18_gn", "adapter": True, "norm_groups": 8}))
    assert not list(check.iter_errors({"name": "cnn", "norm": "group", "norm_groups": 2}))
    assert list(check.iter_errors({"name": "mlp", "norm": "batch"}))
    assert list(check.iter_errors({"name": "cnn", "norm_groups": 0}))
