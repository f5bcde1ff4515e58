"""Model builders: every activation site comes from the factory, with its layer's width."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.models import MODEL_NAMES, TORCHVISION_ACTIVATIONS, ProxyNet, build_model

TINY = 0.25


class ChannelScale(nn.Module):
    """A per-channel learnable activation: fails loudly if built with the wrong width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) * self.scale.view(1, -1, 1, 1)


class Recorder:
    def __init__(self, make=ChannelScale) -> None:
        self.make = make
        self.modules: list[nn.Module] = []

    def __call__(self, channels: int) -> nn.Module:
        module = self.make(channels)
        self.modules.append(module)
        return module


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_activation_site_is_built_by_the_factory(name: str) -> None:
    factory = Recorder()
    model = build_model(name, 10, factory, width=TINY)
    leftovers = [
        type(m).__name__ for m in model.modules() if isinstance(m, TORCHVISION_ACTIVATIONS)
    ]
    assert leftovers == []
    made = {id(m) for m in factory.modules}
    in_model = {id(m) for m in model.modules() if isinstance(m, ChannelScale)}
    assert made == in_model and len(made) >= 4
    # Only EfficientNet's squeeze-excitation gates may keep a sigmoid.
    gates = [n for n, m in model.named_modules() if isinstance(m, nn.Sigmoid | nn.Hardsigmoid)]
    assert all(n.endswith("scale_activation") for n in gates)
    assert bool(gates) == (name == "efficientnet_b0")


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_and_backward_on_32x32(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes, Recorder(), width=TINY)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, num_classes)
    logits.sum().backward()
    # Per-channel activation parameters receive gradients at every site.
    scales = [m.scale for m in model.modules() if isinstance(m, ChannelScale)]
    assert all(s.grad is not None for s in scales)


def test_shared_module_factories_work_too() -> None:
    shared = nn.GELU()
    model = build_model("resnet18", 10, lambda c: shared, width=TINY)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_width_scales_the_model() -> None:
    small = build_model("resnet18", 10, lambda c: nn.ReLU(), width=0.25)
    full = build_model("resnet18", 10, lambda c: nn.ReLU(), width=1.0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) > 10 * count(small)
    assert 11_000_000 < count(full) < 11_300_000  # the CIFAR ResNet-18 has 11.17 M parameters


def _feature_size(model: nn.Module, body: nn.Module) -> tuple[int, int]:
    shapes = []
    handle = body.register_forward_hook(lambda m, i, o: shapes.append(o.shape[-2:]))
    model(torch.randn(1, 3, 32, 32))
    handle.remove()
    return tuple(shapes[0])


def test_torchvision_models_keep_spatial_resolution_for_32x32() -> None:
    relu = lambda c: nn.ReLU()  # noqa: E731
    mobilenet = build_model("mobilenet_v2", 10, relu, TINY).eval()
    assert _feature_size(mobilenet, mobilenet.features) == (4, 4)
    shufflenet = build_model("shufflenet_v2", 10, relu, TINY).eval()
    assert _feature_size(shufflenet, shufflenet.conv5) == (4, 4)
    efficientnet = build_model("efficientnet_b0", 10, relu, TINY).eval()
    assert _feature_size(efficientnet, efficientnet.features) == (2, 2)


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet18, preact_resnet18"):
        build_model("resnet50", 10, lambda c: nn.ReLU())


def test_proxy_whitening_decorrelates_patches() -> None:
    torch.manual_seed(0)
    model = build_model("proxy", 10, lambda c: nn.GELU())
    assert isinstance(model, ProxyNet)
    # Correlated images: smooth noise, so that neighbouring pixels covary strongly.
    images = torch.nn.functional.avg_pool2d(torch.randn(64, 3, 40, 40), 9, stride=1)[:, :, :32, :32]
    model.init_from_data(images)
    out = model.whiten(images)  # N×24×31×31: 12 whitened directions and their negatives
    flat = out[:, :12].permute(1, 0, 2, 3).reshape(12, -1)
    covariance = flat @ flat.T / flat.shape[1]
    # Decorrelated; unit variance except where eps damps the tiniest directions.
    off_diagonal = covariance - torch.diag(covariance.diag())
    assert off_diagonal.abs().max() < 1e-3
    assert covariance.diag()[0] > 0.98 and covariance.diag().max() <= 1 + 1e-3
    assert torch.equal(out[:, 12:], -out[:, :12])
    assert not model.whiten.weight.requires_grad
