import numpy as np
import pytest
import torch

from helpers import make_cnn, make_mlp
from xai_sandbox.errors import InvalidInputError
from xai_sandbox.models import HookSandbox, select_layers
from xai_sandbox.models.fingerprint import fingerprint_module
from xai_sandbox.models.sandbox import Intervention, intervene


def _hook_counts(model: torch.nn.Module) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            + len(m._backward_pre_hooks) for m in model.modules()]


def test_sandbox_changes_nothing(images):
    model = make_cnn()
    x = torch.as_tensor(images)
    before_fp = fingerprint_module(model)
    before_out = model(x).detach().clone()
    with HookSandbox(model) as box:
        inside = box.run(x, target=1)
        records = box.records()
    after_out = model(x).detach()
    assert torch.equal(before_out, inside) and torch.equal(before_out, after_out)
    assert fingerprint_module(model) == before_fp
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert set(records) == {"0", "2", "6"}  # every Conv and Linear
    assert _hook_counts(model) == [0] * len(list(model.modules()))


def test_no_hook_survives_an_exception():
    class Boom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.lin(x)
            raise RuntimeError("boom inside the model")

    model = Boom().eval()
    with pytest.raises(InvalidInputError, match="boom inside the model"), \
            HookSandbox(model) as box:
        box.run(torch.zeros(1, 3), target=0)
    assert _hook_counts(model) == [0, 0]
    # An exception raised in the with-body by the caller also leaves no hook.
    with pytest.raises(ValueError, match="caller"), HookSandbox(make_mlp()):
        raise ValueError("caller")


def test_layer_selection():
    model = make_cnn()
    assert list(select_layers(model, None)) == ["0", "2", "6"]
    assert list(select_layers(model, torch.nn.ReLU)) == ["1", "3"]
    assert list(select_layers(model, ["6", "0"])) == ["6", "0"]
    with pytest.raises(InvalidInputError, match="layers: must name submodules"):
        select_layers(model, "nope")
    with pytest.raises(InvalidInputError, match="selected no layer"):
        select_layers(model, torch.nn.LSTM)


def test_sensitivity_is_gradient_times_activation(rows):
    model = make_mlp()
    x = torch.as_tensor(rows)
    with HookSandbox(model, layers=["0", "2"]) as box:
        box.run(x, target=2)
        sens = box.layer_sensitivity()
    # Manual: the activation of layer 0 and the gradient of output 2 with respect to it.
    h = model[0](x).detach().requires_grad_(True)
    out = model[2](model[1](h))
    (grad,) = torch.autograd.grad(out[:, 2].sum(), h)
    np.testing.assert_allclose(sens["0"], (grad * h).sum(dim=1).detach().double().numpy(),
                               rtol=1e-6)
    # The last layer is linear with bias: sum of its output times gradient = output - 0.
    np.testing.assert_allclose(sens["2"], out[:, 2].detach().double().numpy(), rtol=1e-6)


def test_layer_integrated_gradients_are_complete(rows):
    model = make_mlp()
    x = torch.as_tensor(rows)
    base = torch.zeros_like(x)
    with HookSandbox(model, layers=["0"]) as box:
        attr = box.layer_attributions(x, target=1, baselines=base, n_steps=200)["0"]
    expected = (model(x)[:, 1] - model(base)[:, 1]).detach().double().numpy()
    np.testing.assert_allclose(attr, expected, rtol=1e-2, atol=1e-3)
    assert _hook_counts(model) == [0] * len(list(model.modules()))


def test_sandbox_on_efficientnet_changes_nothing(efficientnet, cat):
    module = efficientnet.adapter.module
    x = torch.as_tensor(cat[1])
    before = module(x).detach()
    with HookSandbox(module, layers=["_conv_head", "_fc"]) as box:
        box.run(x, target=285)
        records = box.records()
    assert records["_conv_head"].activation.shape == (1, 1280, 7, 7)
    assert records["_conv_head"].gradient is not None
    assert torch.equal(module(x).detach(), before)
    assert fingerprint_module(module) == efficientnet.fingerprint
    assert sum(_hook_counts(module)) == 0


# ------------------------------------------------------------------ interventions
def test_an_intervention_replaces_an_output_and_leaves_no_hook(rows):
    model = make_mlp()
    x = torch.as_tensor(rows)
    before = model(x).detach().clone()
    seen = []
    with intervene([Intervention(model[0], lambda a: seen.append(a.clone())),
                    Intervention(model[1], torch.zeros_like)]):
        inside = model(x).detach()
    # The ReLU's output zeroed: what is left is the last layer's bias.
    np.testing.assert_allclose(inside.numpy(), model[2].bias.detach().expand_as(inside).numpy())
    torch.testing.assert_close(seen[0], model[0](x))          # a recording changes nothing
    assert torch.equal(model(x).detach(), before)
    assert _hook_counts(model) == [0] * len(list(model.modules()))


def test_an_intervention_at_the_input_takes_positional_or_keyword_hidden_states():
    class Block(torch.nn.Module):
        def forward(self, hidden_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return hidden_states * scale

    block = Block()
    x = torch.ones(2, 3)
    with intervene([Intervention(block, lambda h: h + 1, at="input")]):
        assert torch.equal(block(x, scale=2.0), torch.full((2, 3), 4.0))
        assert torch.equal(block(hidden_states=x), torch.full((2, 3), 2.0))
    assert torch.equal(block(x), x)
    assert _hook_counts(block) == [0]


def test_no_intervention_survives_an_exception():
    model = make_mlp()
    with pytest.raises(RuntimeError, match="inside the transform"), \
            intervene([Intervention(model[0], lambda a: a * 2),
                       Intervention(model[2], _boom)]):
        model(torch.zeros(1, 6))
    assert _hook_counts(model) == [0] * len(list(model.modules()))
    # A bad intervention is refused by name, and the hooks registered before it go too.
    with pytest.raises(InvalidInputError, match="interventions: must be Intervention"), \
            intervene([Intervention(model[0], lambda a: a), "model[2]"]):  # type: ignore[list-item]
        pass
    assert _hook_counts(model) == [0] * len(list(model.modules()))


def _boom(_: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("inside the transform")
