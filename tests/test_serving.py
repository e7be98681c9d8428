"""Inference copies for serving: the same answers as the training model, cheaper."""

import pytest
import torch
from torch import nn

from engines.models import MODELS, build_model
from engines.serving import ServingModel, fold_batchnorm, inference_copy

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _trained_like(model: nn.Module) -> nn.Module:
    """Random but non-trivial batch-norm statistics, as after training."""
    g = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(module.num_features, generator=g) + 0.5)
                module.bias.data.copy_(torch.randn(module.num_features, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch", sorted(MODELS.names()))
def test_inference_copy_answers_like_the_model(arch):
    channels = 1 if arch.startswith("lenet") else 3
    torch.manual_seed(0)
    model = _trained_like(build_model(arch, channels, 10, MEAN[:channels], STD[:channels]))
    x = torch.rand((4, channels, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = torch.softmax(model(x), dim=1)
        served = torch.softmax(ServingModel(model)(x), dim=1)
    torch.testing.assert_close(served, expected, atol=1e-5, rtol=0)
    assert model.training is False and all(p.requires_grad for p in model.parameters())


def test_batchnorm_after_conv_is_folded_and_the_original_is_untouched():
    model = _trained_like(build_model("resnet18_8x", 3, 10, MEAN, STD))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_lenet_serving_is_bit_identical():
    """No batch norm, default layout: the MNIST victims answer exactly as before."""
    model = build_model("lenet5", 1, 10, (0.5,), (0.25,)).eval()
    copy = inference_copy(model)
    assert copy.channels_last is False
    x = torch.rand((8, 1, 32, 32))
    with torch.inference_mode():
        assert torch.equal(copy(x), model(x))


@pytest.mark.parametrize(
    "archs",
    [
        ["lenet5", "lenet5_half", "lenet5_fifth"],  # the MNIST preset: stacked
        ["lenet5", "lenet5", "lenet5"],  # the homogeneous ablation: stacked
        ["resnet18_8x", "mobilenetv2_paper", "densenet121_pool"],  # the CIFAR preset: one inference copy each
    ],
)
def test_ensemble_server_answers_like_the_plain_members(archs):
    from engines.defenders._misleader_serve import EnsembleServer, StackedLeNets

    channels = 1 if archs[0].startswith("lenet") else 3
    torch.manual_seed(0)
    members = [_trained_like(build_model(a, channels, 10, MEAN[:channels], STD[:channels])) for a in archs]
    server = EnsembleServer(members, archs, torch.device("cpu"))
    assert isinstance(server.groups[0], StackedLeNets) == (channels == 1)
    x = torch.rand((6, channels, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = sum(torch.softmax(m(x), dim=1) for m in members) / len(members)
        served = server(x)
    torch.testing.assert_close(served, expected, atol=1e-6, rtol=0)
    assert all(m.training is False for m in server.members)


def test_stacked_lenets_need_one_normalisation():
    from engines.defenders._misleader_serve import stackable_lenets

    same = [build_model(a, 1, 10, (0.5,), (0.25,)) for a in ("lenet5", "lenet5_half")]
    other = build_model("lenet5_fifth", 1, 10, (0.4,), (0.25,))
    assert stackable_lenets(same) and not stackable_lenets([*same, other])
    assert not stackable_lenets([*same, build_model("resnet18_8x", 1, 10, (0.5,), (0.25,))])


def test_micro_batches_follow_the_largest_activation_and_keep_answers():
    """ResNet-34-8x's largest activation is 64 x 32 x 32 floats (256 KiB per image): 64 images
    per 16 MiB micro-batch; LeNet-5's (6 x 28 x 28 floats) never splits a batch of 256."""
    from engines.serving import MICRO_BATCH_ACTIVATION_BYTES

    resnet = ServingModel(build_model("resnet34_8x", 3, 10, MEAN, STD))
    assert resnet.micro_batch((3, 32, 32), torch.device("cpu")) == MICRO_BATCH_ACTIVATION_BYTES // (64 * 32 * 32 * 4)
    lenet = ServingModel(build_model("lenet5", 1, 10, (0.5,), (0.25,)))
    assert lenet.micro_batch((1, 32, 32), torch.device("cpu")) > 256
    model = _trained_like(build_model("mobilenetv2_paper", 3, 10, MEAN, STD))
    served = ServingModel(model)
    served._micro_batch[(3, 32, 32)] = 3  # force splitting of a small batch
    x = torch.rand((8, 3, 32, 32), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(served(x), model(x), atol=1e-5, rtol=0)
