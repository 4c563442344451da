"""The model zoo: every model builds and runs, and the big ones match torchvision's sizes."""

import pytest
import torch

from satc.models import ZOO, count_macs, count_params, get_model, layer_macs, list_models

# Reduced sizes so the forward check stays fast; full sizes are checked by parameter count.
SMALL = {
    "resnet18_cifar": {"width": 8}, "resnet18": {"width": 8},
    "resnet50_cifar": {"width": 8}, "resnet50": {"width": 8},
    "vgg16_bn": {"width": 8}, "vit_tiny": {"dim": 48, "depth": 2},
}


@pytest.mark.parametrize("name", list(ZOO))
def test_forward_shape(name):
    spec = ZOO[name]
    model = get_model(name, num_classes=7, **SMALL.get(name, {}))
    if getattr(model, "input_dtype", torch.float32) == torch.int64:     # token models: [N, T, V]
        out = model(torch.randint(0, 7, (2, *spec.input_shape)))
        assert out.shape == (2, *spec.input_shape, 7)
    else:
        out = model(torch.randn(2, *spec.input_shape))
        assert out.shape == (2, 7)
    out.sum().backward()


@pytest.mark.parametrize("name", ["mlp", "cnn", "vit_tiny"])
def test_default_size_forward(name):
    spec = ZOO[name]
    assert get_model(name)(torch.randn(2, *spec.input_shape)).shape == (2, spec.num_classes)


@pytest.mark.parametrize("name,params", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_torchvision_parameter_counts(name, params):
    assert count_params(get_model(name)) == params


def test_resnet18_macs_match_the_published_figure():
    # 1.82 GMACs is the usual ResNet-18 figure (conv + fc, 224x224).
    assert count_macs(get_model("resnet18"), (3, 224, 224)) == 1_814_073_344


def test_layer_macs_by_hand():
    model = get_model("cnn")
    macs = layer_macs(model, (1, 8, 8))
    assert macs["features.0"] == 16 * 64 * 9  # Co * H*W * Ci*kh*kw
    assert macs["classifier.2"] == 64 * 10
    assert count_macs(model, (1, 8, 8)) == sum(macs.values())


def test_vit_counts_attention_matmuls():
    model = get_model("vit_tiny", dim=48, depth=1)
    extra = count_macs(model, (3, 32, 32)) - sum(layer_macs(model, (3, 32, 32)).values())
    assert extra == 2 * 64 * 64 * 48  # q@k^T and attn@v over 64 tokens


def test_vit_exports_to_plain_ops():
    model = get_model("vit_tiny", dim=48, depth=1).eval()
    graph = torch.export.export(model, (torch.randn(2, 3, 32, 32),)).graph
    ops = {n.target.__name__.split(".")[0] for n in graph.nodes if n.op == "call_function"}
    assert ops <= {"conv2d", "flatten", "transpose", "add", "layer_norm", "linear", "reshape",
                   "permute", "mul", "matmul", "softmax", "dropout", "gelu", "mean"}, ops


def test_registry():
    assert [s.name for s in list_models()] == list(ZOO)
    assert ZOO["resnet18"].input_shape == (3, 224, 224)
    with pytest.raises(KeyError, match="known"):
        get_model("alexnet")
