"""`train.device`: resolving cpu | cuda | auto, describing the device for run.json, and client data on a device.

There is no GPU in CI: cuda paths run against a faked torch.cuda, the data paths on the "meta" device (shapes,
dtypes and devices without storage); the last test runs on a real GPU where there is one.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from pcl.data.federation import Federation
from pcl.data.types import ClientData
from pcl.device import describe, resolve_device

SPEC = {"source": {"name": "digits"},
        "partition": {"scheme": "iid", "num_clients": 4, "seed": 1, "noise": {"std": 0.1}}}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Two visible GPUs, the second one current."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(name=f"Fake GPU {i}", total_memory=(80 + i) * 2**30))


def small_data() -> ClientData:
    n = torch.tensor([3, 1, 0])
    x = torch.arange(3 * 3 * 2, dtype=torch.float32).reshape(3, 3, 2)
    y = torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0]])
    return ClientData(x=x, y=y, n=n)


# ------------------------------------------------------------------------------------------ resolve_device


def test_cpu_and_auto_without_a_gpu(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_a_gpu_is_an_error_naming_the_setting(no_cuda, name):
    with pytest.raises(ValueError, match=r"train\.device.*CUDA is not available"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "mps", "cuda:x", "cuda:", "cuda:-1", "", None, 0])
def test_unknown_device_is_an_error_naming_the_setting(name):
    with pytest.raises(ValueError, match=r"train\.device: unknown device"):
        resolve_device(name)


def test_cuda_and_auto_with_gpus_come_back_with_an_index(fake_cuda):
    assert resolve_device("cuda") == torch.device("cuda", 1)  # the current device
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"train\.device.*'cuda:2'.*only 2 CUDA device"):
        resolve_device("cuda:2")


# ------------------------------------------------------------------------------------------------ describe


def test_describe_cpu():
    info = describe(torch.device("cpu"))
    assert info == {"type": "cpu", "index": None, "torch_cuda": torch.version.cuda}
    json.dumps(info)


def test_describe_gpu(fake_cuda):
    info = describe(resolve_device("cuda:0"))
    assert info == {"type": "cuda", "index": 0, "torch_cuda": torch.version.cuda, "name": "Fake GPU 0",
                    "total_memory_bytes": 80 * 2**30}
    assert describe(torch.device("cuda"))["index"] == 1  # no index: the current device
    json.dumps(info)


# ------------------------------------------------------------------------------------------- client data


def test_mask_marks_each_clients_rows():
    data = small_data()
    assert data.mask().tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert data.device == torch.device("cpu")


def test_client_data_to_a_device_keeps_shapes_dtypes_and_values():
    data = small_data()
    assert data.to("cpu") is data and data.to(torch.device("cpu")) is data  # already there: no copy
    meta = data.to("meta")
    assert meta is not data and meta.device.type == "meta" and meta.num_clients == 3
    for a, b in ((meta.x, data.x), (meta.y, data.y), (meta.n, data.n)):
        assert a.device.type == "meta" and a.shape == b.shape and a.dtype == b.dtype
    mask = meta.mask()
    assert mask.device.type == "meta" and mask.shape == (3, 3) and mask.dtype == torch.bool
    back = ClientData(x=data.x.clone(), y=data.y.clone(), n=data.n.clone()).to("cpu")
    assert torch.equal(back.x, data.x) and torch.equal(back.y, data.y) and torch.equal(back.n, data.n)


def test_federation_client_data_on_a_device_is_cached_and_leaves_cpu_alone():
    fed = Federation.build(SPEC)
    cpu = fed.client_data("train")
    assert cpu.device == torch.device("cpu")
    assert fed.client_data("train", "cpu") is cpu and fed.client_data("train", torch.device("cpu")) is cpu
    meta = fed.client_data("train", "meta")
    assert meta is fed.client_data("train", torch.device("meta"))  # built and copied once
    assert meta.device.type == "meta" and meta.x.shape == cpu.x.shape and meta.y.dtype == cpu.y.dtype
    assert fed.client_data("train") is cpu and cpu.device == torch.device("cpu")
    assert torch.equal(cpu.x, Federation.build(SPEC).client_data("train").x)  # the CPU copy is unchanged
    with pytest.raises(ValueError, match="unknown split"):
        fed.client_data("training", "meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_federation_on_a_real_gpu_has_the_cpu_values():
    fed = Federation.build(SPEC)
    device = resolve_device("cuda")
    gpu, cpu = fed.client_data("test", device), fed.client_data("test")
    assert gpu.device == device and fed.client_data("test", "cuda") is gpu
    assert torch.equal(gpu.x.cpu(), cpu.x) and torch.equal(gpu.y.cpu(), cpu.y) and torch.equal(gpu.n.cpu(), cpu.n)
    assert gpu.mask().device == device and torch.equal(gpu.mask().cpu(), cpu.mask())
    assert describe(device)["total_memory_bytes"] > 0
