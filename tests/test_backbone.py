"""The backbone's parts and its CPU layout for products of a few rows (`FewRowsLinear`)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medusa_lib import backbone
from medusa_lib.backbone import FEW_ROWS, FewRowsLinear, few_rows_layout, logit_rows
from medusa_lib.models import load_base


def few_rows_linear(in_features=48, out_features=80, bias=True) -> FewRowsLinear:
    torch.manual_seed(0)
    layer = nn.Linear(in_features, out_features, bias=bias)
    few_rows_layout(layer)
    return layer


@pytest.mark.parametrize("shape", [(1, 48), (3, 48), (1, 4, 48), (2, 5, 48), (1, FEW_ROWS, 48), (1, FEW_ROWS + 1, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_few_rows_linear_equals_f_linear_up_to_rounding(shape, bias):
    layer = few_rows_linear(bias=bias)
    x = torch.randn(shape)
    y = layer(x)
    assert y.shape == (*shape[:-1], 80)
    torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-6)


def test_few_rows_linear_takes_the_rows_layout_only_for_few_fp32_cpu_rows(monkeypatch):
    layer, calls = few_rows_linear(), []
    monkeypatch.setattr(backbone, "logit_rows", lambda w, h: calls.append(h.shape[0]) or F.linear(h, w))
    for rows in (1, 2, 3, FEW_ROWS):
        layer(torch.randn(1, rows, 48))
    assert calls == [1, 2, 3, FEW_ROWS]
    layer(torch.randn(FEW_ROWS + 1, 48))  # a prompt's prefill: MKL's GEMM is fine there
    layer.double()(torch.randn(2, 48, dtype=torch.float64))  # other dtypes keep F.linear
    assert calls == [1, 2, 3, FEW_ROWS]


def test_logit_rows_pads_one_and_three_rows_and_returns_only_theirs():
    W, h = torch.randn(80, 48), torch.randn(5, 48)
    for n in (1, 2, 3, 4, 5):
        got = logit_rows(W, h[:n])
        assert got.shape == (n, 80)
        torch.testing.assert_close(got, h[:n] @ W.T, rtol=1e-5, atol=1e-5)


def test_few_rows_linear_trains():
    layer = few_rows_linear()
    x = torch.randn(3, 48, requires_grad=True)
    layer(x).square().sum().backward()
    ref = nn.Linear(48, 80)
    ref.load_state_dict(layer.state_dict())
    x2 = x.detach().clone().requires_grad_()
    ref(x2).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_few_rows_layout_swaps_only_plain_linears_and_keeps_the_weights():
    class Custom(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), Custom(8, 8), nn.Sequential(nn.Linear(8, 4)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert few_rows_layout(model) == 2
    assert [type(m).__name__ for m in model.modules() if isinstance(m, nn.Linear)] == \
        ["FewRowsLinear", "Custom", "FewRowsLinear"]
    assert few_rows_layout(model) == 0  # twice is a no-op
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_load_base_gives_a_model_in_the_few_rows_layout_with_the_same_logits():
    model, _ = load_base("tiny", device="cpu")
    assert all(type(m) is FewRowsLinear for m in model.modules() if isinstance(m, nn.Linear))
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        fast = model(ids).logits
        for m in model.modules():
            if type(m) is FewRowsLinear:
                m.__class__ = nn.Linear
        plain = model(ids).logits
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
