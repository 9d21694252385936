"""miscc.modules: spectral normalisation computed once for a block of forwards."""
import copy

import torch
import torch.nn.functional as F
from torch.nn.utils.spectral_norm import SpectralNorm

from miscc.modules import spectral_norm_once


def test_spectral_norm_once_normalises_once_for_every_forward_of_the_block():
    torch.manual_seed(0)
    conv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 4, 3, padding=1))
    manual = copy.deepcopy(conv)
    x1, x2 = torch.randn(2, 3, 6, 6), torch.randn(3, 3, 6, 6)
    with spectral_norm_once(conv):
        y1, y2 = conv(x1), conv(x2)
        (y1.sum() + 2 * y2.sum()).backward()
    # the replica: one power iteration, one normalised weight for both forwards
    hook = next(h for h in manual._forward_pre_hooks.values() if isinstance(h, SpectralNorm))
    weight = hook.compute_weight(manual, do_power_iteration=True)
    m1, m2 = F.conv2d(x1, weight, manual.bias, padding=1), F.conv2d(x2, weight, manual.bias, padding=1)
    (m1.sum() + 2 * m2.sum()).backward()
    assert torch.allclose(y1, m1, atol=1e-6) and torch.allclose(y2, m2, atol=1e-6)
    assert torch.allclose(conv.weight_u, manual.weight_u) and torch.allclose(conv.weight_v, manual.weight_v)
    assert torch.allclose(conv.weight_orig.grad, manual.weight_orig.grad, atol=1e-5)
    # after the block the hook is back: each forward iterates again
    assert any(isinstance(h, SpectralNorm) for h in conv._forward_pre_hooks.values())
    u = conv.weight_u.clone()
    conv(x1)
    assert not torch.equal(u, conv.weight_u)
