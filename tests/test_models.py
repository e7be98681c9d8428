import pytest
import torch

from engines.models import MODELS, build_model

SHAPES = {
    "lenet5": 1,
    "lenet5_half": 1,
    "lenet5_fifth": 1,
    "resnet18_8x": 3,
    "resnet34_8x": 3,
    "mobilenetv2": 3,
    "densenet121": 3,
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
