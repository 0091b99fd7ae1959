import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam

from helpers import make_cnn
from xai_sandbox.explainers import explain
from xai_sandbox.explainers.cam import grad_cam_plus_plus_map


def test_grad_cam_equals_captum_on_efficientnet(efficientnet, cat):
    module = efficientnet.adapter.module
    x = torch.as_tensor(cat[1])
    ours = explain(efficientnet, cat[1], method="grad_cam", target=285, upsample=False)
    ref = LayerGradCam(module, module._conv_head).attribute(x, target=285,
                                                            relu_attributions=True)
    np.testing.assert_allclose(ours.values, ref.detach().double().numpy(), rtol=1e-5, atol=1e-7)
    up = explain(efficientnet, cat[1], method="grad_cam", target=285)
    ref_up = LayerAttribution.interpolate(ref, (224, 224), "bilinear")
    np.testing.assert_allclose(up.values, ref_up.detach().double().numpy(), rtol=1e-5,
                               atol=1e-7)
    assert ours.parameters["layer"] == "_conv_head"


def test_grad_cam_equals_captum_on_a_small_cnn(images):
    model = make_cnn()
    ours = explain(model, images, method="grad_cam", target=1, layer="0", upsample=False)
    ref = LayerGradCam(model, model[0]).attribute(torch.as_tensor(images), target=1,
                                                  relu_attributions=True)
    np.testing.assert_allclose(ours.values, ref.detach().double().numpy(), rtol=1e-6)


class _Tiny(torch.nn.Module):
    """A = [x; 2x] through a 1x1 convolution, score = <u, A> through a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1, bias=False)
        self.head = torch.nn.Linear(8, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, -1.0, 2.0, 0.5, 0.5, 0.5, -1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


def test_grad_cam_pp_matches_a_hand_computation():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)
    e = explain(_Tiny().eval(), x, method="grad_cam_pp", target=0, layer="conv",
                upsample=False)
    # By hand. A0 = [[1,2],[3,4]], A1 = [[2,4],[6,8]]; dS/dA = u:
    # g0 = [[1,-1],[2,0.5]], g1 = [[0.5,0.5],[-1,1]]; sum A0 = 10, sum A1 = 20.
    # alpha = g^2 / (2 g^2 + sumA g^3) = 1 / (2 + sumA g) where g != 0.
    # channel 0: alpha = [1/12, 1/(-8)], [1/22, 1/7]; relu(g) = [1, 0], [2, 0.5]
    #   w0 = 1/12 + 0 + 2/22 + 0.5/7
    # channel 1: alpha = [1/12, 1/12], [1/(-18), 1/22]; relu(g) = [.5, .5], [0, 1]
    #   w1 = 0.5/12 + 0.5/12 + 0 + 1/22
    w0 = 1 / 12 + 2 / 22 + 0.5 / 7
    w1 = 0.5 / 12 + 0.5 / 12 + 1 / 22
    expected = np.maximum(w0 * np.array([[1, 2], [3, 4]]) + w1 * np.array([[2, 4], [6, 8]]), 0)
    np.testing.assert_allclose(e.values[0, 0], expected, rtol=1e-6)


def test_grad_cam_pp_zero_denominator_gives_zero_alpha():
    A = torch.ones(1, 1, 1, 2)
    g = torch.tensor([[[[0.0, 1.0]]]])
    # sum A = 2; at g=0 denominator 0 -> alpha 0; at g=1 alpha = 1/(2+2) = 0.25.
    cam = grad_cam_plus_plus_map(A, g)
    np.testing.assert_allclose(cam.numpy().ravel(), [0.25, 0.25])


def test_grad_cam_pp_on_efficientnet_highlights_the_cat(efficientnet, cat):
    e = explain(efficientnet, cat[1], method="grad_cam_pp", target=285)
    heat = e.values[0, 0]
    assert heat.shape == (224, 224) and heat.min() >= 0
    # The cat's face fills the centre of the crop: the centre outweighs the border.
    centre = heat[56:168, 56:168].mean()
    border = np.concatenate([heat[:28].ravel(), heat[-28:].ravel()]).mean()
    assert centre > border
