import pytest
import torch

from engines.models import MODELS, build_model, multiply_accumulates

SHAPES = {
    "lenet5": 1,
    "lenet5_half": 1,
    "lenet5_fifth": 1,
    "resnet18_8x": 3,
    "resnet34_8x": 3,
    "mobilenetv2": 3,
    "mobilenetv2_paper": 3,
    "densenet121": 3,
    "densenet121_pool": 3,
}
WIDTHS = {"lenet5": (6, 16, 120, 84), "lenet5_half": (3, 8, 60, 42), "lenet5_fifth": (4, 10, 30, 30)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_model_output_shape(name):
    channels = SHAPES[name]
    model = build_model(name, channels, 10, (0.5,) * channels, (0.25,) * channels).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_lenet_widths(name):
    body = build_model(name, 1, 10, (0.0,), (1.0,))[1]
    convs = [m for m in body.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in body.modules() if isinstance(m, torch.nn.Linear)]
    assert (convs[0].out_channels, convs[1].out_channels, linears[0].out_features, linears[1].out_features) == WIDTHS[
        name
    ]


def test_every_registered_model_is_tested():
    assert set(MODELS.names()) == set(SHAPES)


def test_models_normalise_inputs_themselves():
    model = build_model("lenet5", 1, 10, (0.5,), (0.5,))
    x = torch.full((1, 1, 32, 32), 0.5)
    assert torch.allclose(model[0](x), torch.zeros_like(x))


# Parameter counts (10 classes, 3 input channels) and multiply-accumulates per 32x32 image.
# The public MISLEADER code's students: MobileNetV2 with the paper's blocks (2.24M parameters)
# and DenseNet-121 with a stride-2 max-pool after its stem (the dense blocks run at 16-8-4-2).
CIFAR_COSTS = {
    "resnet34_8x": (21_282_122, 1_159_402_496),
    "resnet18_8x": (11_173_962, 555_422_720),
    "mobilenetv2": (2_296_922, 91_154_944),
    "mobilenetv2_paper": (2_236_682, 87_976_448),
    "densenet121": (6_956_298, 888_350_720),
    "densenet121_pool": (6_956_426, 223_422_464),
}


@pytest.mark.parametrize("name", sorted(CIFAR_COSTS))
def test_cifar_parameter_and_multiply_accumulate_counts(name):
    model = build_model(name, 3, 10, (0.5,) * 3, (0.25,) * 3)
    assert (sum(p.numel() for p in model.parameters()), multiply_accumulates(model, (3, 32, 32))) == CIFAR_COSTS[name]


def test_multiply_accumulates_of_lenet5_by_hand():
    conv1, conv2 = 28 * 28 * 6 * 25, 10 * 10 * 16 * 6 * 25
    assert multiply_accumulates(build_model("lenet5", 1, 10, (0.0,), (1.0,)), (1, 32, 32)) == (
        conv1 + conv2 + 400 * 120 + 120 * 84 + 84 * 10
    )


def test_public_code_students_feature_shapes():
    """DenseNet-121 pools to 16x16 before its first dense block; MobileNetV2 keeps 32x32 until its
    third stage and ends at 4x4 with 1280 channels; a 1x1 expansion only where t > 1."""
    dense = build_model("densenet121_pool", 3, 10, (0.5,) * 3, (0.25,) * 3)[1].eval()
    plain = build_model("densenet121", 3, 10, (0.5,) * 3, (0.25,) * 3)[1].eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert dense.stem(x).shape == (2, 64, 16, 16)
        assert plain.stem(x).shape == (2, 64, 32, 32)
        assert dense.stages(dense.stem(x)).shape == (2, 1024, 2, 2)
        mobile = build_model("mobilenetv2_paper", 3, 10, (0.5,) * 3, (0.25,) * 3)[1].eval()
        assert mobile.tail(mobile.layers(mobile.stem(x))).shape == (2, 1280, 4, 4)
    first = mobile.layers[0].block
    assert [type(m) for m in first if isinstance(m, torch.nn.Conv2d)] == [torch.nn.Conv2d] * 2
    assert first[0].groups == 32 and mobile.layers[0].project is None
    assert all(block.project is None for block in mobile.layers)


def test_public_code_ensemble_costs_three_quarters_of_the_teacher():
    """The CIFAR preset's members together: about 0.75x the ResNet-34-8x teacher's
    multiply-accumulates (the arena's earlier DenseNet alone cost 0.77x)."""
    from engines.defenders.misleader import PRESETS

    members = sum(CIFAR_COSTS[arch][1] for arch, *_ in PRESETS["cifar"]["members"])
    assert 0.74 < members / CIFAR_COSTS["resnet34_8x"][1] < 0.76
