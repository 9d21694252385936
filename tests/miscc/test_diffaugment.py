"""miscc/diffaugment.py: position-keeping DiffAugment for conditional discriminators."""
import pytest
import torch

from miscc.diffaugment import diff_augment, parse_policy


def test_parse_policy():
    assert parse_policy("") == ()
    assert parse_policy("translation, cutout") == ("translation", "cutout")
    with pytest.raises(ValueError, match="unknown policy \\['flip'\\].*valid: color, translation, cutout"):
        parse_policy("translation,flip")


def test_translation_is_an_integer_shift_within_the_ratio():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 15, 15] = 1.0  # one lit pixel per image
    out = diff_augment(x, ("translation",), translation=1 / 8)
    assert out.shape == x.shape
    pos = out.flatten(1).argmax(1)
    dy, dx = pos // 32 - 15, pos % 32 - 15
    assert out.flatten(1).sum(1).eq(1).all()  # moved, not blurred or lost (the pixel stays inside)
    assert dy.abs().max() <= 4 and dx.abs().max() <= 4  # 1/8 of 32 px
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # per-sample shifts
    edge = torch.ones(64, 1, 8, 8)
    shifted = diff_augment(edge, ("translation",), translation=0.25)
    assert (shifted == 0).any() and set(shifted.unique().tolist()) <= {0.0, 1.0}  # zero fill, no wrap-around


def test_cutout_zeroes_one_square_and_colour_keeps_gradients():
    torch.manual_seed(1)
    x = torch.ones(16, 3, 16, 16)
    out = diff_augment(x, ("cutout",), cutout=0.25)
    zeros = (out == 0).all(1).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the borders
    y = torch.rand(4, 3, 8, 8, requires_grad=True)
    diff_augment(y, ("color", "translation", "cutout")).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
