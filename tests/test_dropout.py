"""s2s.nn.dropout: nn.Dropout's rate, scale and expectation from a cheaper mask."""

import pytest
import torch

from s2s.nn.dropout import LEVELS, Dropout, keep_mask

N = 1 << 20


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_each_of_the_four_numbers_a_draw_gives_drops_at_rate_p_independently(p):
    torch.manual_seed(0)
    kept = keep_mask(torch.Size([N]), p, torch.float32) > 0
    sd = (p * (1 - p) / (N / 4)) ** 0.5
    lanes = kept.view(-1, 4).float()  # the four 16-bit parts of one 64-bit draw
    for lane in range(4):
        assert abs(lanes[:, lane].mean().item() - (1 - p)) < 5 * sd, lane
    both = (lanes[:, 0] * lanes[:, 1]).mean().item()  # neighbours: independent
    assert abs(both - (1 - p) ** 2) < 5 * sd


def test_kept_elements_are_scaled_by_the_exact_keep_probability():
    torch.manual_seed(1)
    layer = Dropout(0.3).train()
    x = torch.ones(N)
    y = layer(x)
    keep = 1 - round(0.3 * LEVELS) / LEVELS
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / keep, rel=1e-6)]
    assert abs(y.mean().item() - 1.0) < 0.005  # the expectation is kept


def test_the_gradient_is_the_mask_and_bf16_stays_bf16():
    torch.manual_seed(2)
    x = torch.randn(64, 33, dtype=torch.bfloat16, requires_grad=True)
    y = Dropout(0.4).train()(x)
    assert y.dtype == torch.bfloat16
    y.sum().backward()
    torch.testing.assert_close(x.grad * x.detach(), y.detach())
    assert (x.grad == 0).any() and (x.grad != 0).any()


def test_eval_zero_and_one_and_the_seed():
    x = torch.randn(100, 10)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    layer = Dropout(0.5).train()
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), a)  # reproducible under a seed
    assert not torch.equal(layer(x), a)  # a new mask at each call
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
