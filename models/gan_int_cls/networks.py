"""GAN-INT-CLS (Reed et al., "Generative Adversarial Text to Image Synthesis", ICML 2016): models and losses.

Module and parameter names follow aelnouby/Text-to-Image-Synthesis (`models/gan_cls.py`, `wgan_cls.py`, `gan.py`,
`utils.py:Concat_embed`), so that port's checkpoints (`gen_<epoch>.pth` / `disc_<epoch>.pth`, saved from
DataParallel with every key prefixed by `module.`) load strictly with `load_gan_int_cls`. Differences from the port,
each deliberate:

* Channel plans are computed from `ngf`/`ndf` and `image_size`; at 64 px they equal the port's layers and key indices.
* `embed_dim` (1024 for Reed's char-CNN-RNN vectors, or our text encoder's `TEXT.EMBEDDING_DIM`) and the projected
  dimension are constructor arguments; `embed_dim=0` builds the port's unconditional `vanilla_gan`/`vanilla_wgan`.
* The WGAN critic returns one value per sample [B]; the port returns the batch mean `x.mean(0).view(1)`. Every loss
  takes a mean, so `scores.mean()` gives the port's number.
* The sigmoid of the `gan` discriminator is applied in `forward` (not as `netD_2.1`; it has no parameters, so the
  state dict is the same) and the losses use `binary_cross_entropy_with_logits` on the logits: the same value as the
  port's `BCELoss(sigmoid(x))` without its log clamp at -100, and safe under autocast.
* Losses fix the port's bugs: the fake batch is detached in the D step, the gradient penalty takes the norm over
  all of a sample's pixels (the port's `compute_GP` took it over channels only), and CLS wrong images come from a
  different class (`wrong_indices`; the port compared h5py objects by identity).
* INT (Reed's `(t_a + t_b)/2` over the two batch halves, G loss only), which the port never implemented (issue #17).
"""
from __future__ import annotations

import math
import torch
import torch.nn as nn

from miscc.checkpoint import load_checkpoint, load_state_dict_strict
from miscc.errors import InputError

LOSS_TYPES = ("gan", "wgan", "wgan-gp")
# INTCLS.TYPE values (the port's `--type`, plus wgan-gp) -> (loss type, conditional).
MODEL_TYPES = {
    "gan": ("gan", True),
    "wgan": ("wgan", True),
    "wgan-gp": ("wgan-gp", True),
    "vanilla_gan": ("gan", False),
    "vanilla_wgan": ("wgan", False),
}


def _num_doublings(image_size: int, what: str) -> int:
    """Number of x2 steps between the 4x4 bottleneck and `image_size` (a power of two >= 8)."""
    if not isinstance(image_size, int) or image_size < 8 or image_size & (image_size - 1):
        raise InputError(f"{what}: image_size must be a power of two >= 8 (64 for GAN-INT-CLS), got {image_size!r}")
    return int(math.log2(image_size // 4))


class Concat_embed(nn.Module):
    """Project a text embedding (Linear -> BN1d -> LReLU 0.2) and tile it over a feature map, after its channels.

    The port's `utils.Concat_embed`; `projection.{0,1}` are the Linear and BatchNorm1d keys.
    """

    def __init__(self, embed_dim: int, projected_embed_dim: int):
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(embed_dim, projected_embed_dim),
            nn.BatchNorm1d(projected_embed_dim),
            nn.LeakyReLU(0.2, inplace=True),
        )

    def forward(self, inp: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        projected = self.projection(embed)[:, :, None, None].expand(-1, -1, inp.size(2), inp.size(3))
        return torch.cat([inp, projected], 1)


class minibatch_discriminator(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, sec. 3.2): o_b(x_i) = sum_j exp(-||M_i,b - M_j,b||_1).

    The port's `utils.minibatch_discriminator` (same `T_tensor` parameter, initialised randn * 0.1), which it never
    wired in. Here it returns only the [B, B_dim] similarity features; `discriminator` tiles them over the 4x4 map.
    As in the paper and the port, the sum includes j = i (a constant 1).
    """

    def __init__(self, in_features: int, B_dim: int = 128, C_dim: int = 16):
        super().__init__()
        self.B_dim, self.C_dim = B_dim, C_dim
        self.T_tensor = nn.Parameter(torch.randn(in_features, B_dim * C_dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mm(self.T_tensor).view(-1, self.B_dim, self.C_dim)
        l1 = (m.unsqueeze(3) - m.permute(1, 2, 0).unsqueeze(0)).abs().sum(2)  # [B, B_dim, B]
        return torch.exp(-l1).sum(2)


class generator(nn.Module):
    """DCGAN generator conditioned on a projected text embedding (the port's `gan_cls.generator`).

    `forward(embed [B, embed_dim], z [B, noise_dim] or [B, noise_dim, 1, 1]) -> images [B, 3, S, S]` in [-1, 1].
    The latent is [text (projected_embed_dim), noise] as in the port; `noise_first=True` gives Reed's Lua order
    [noise, text] (`main_cls_int.lua` joins {Z, txt}). With `embed_dim=0` the model is unconditional (the port's
    `gan.generator`): no `projection`, and `embed` must be None.
    """

    def __init__(self, embed_dim: int = 1024, projected_embed_dim: int = 128, noise_dim: int = 100, ngf: int = 64,
                 num_channels: int = 3, image_size: int = 64, noise_first: bool = False):
        super().__init__()
        n = _num_doublings(image_size, "generator")
        self.embed_dim, self.noise_dim, self.image_size = embed_dim, noise_dim, image_size
        self.projected_embed_dim = projected_embed_dim if embed_dim else 0
        self.noise_first = noise_first
        self.projection = None
        if embed_dim:
            self.projection = nn.Sequential(
                nn.Linear(embed_dim, projected_embed_dim),
                nn.BatchNorm1d(projected_embed_dim),
                nn.LeakyReLU(0.2, inplace=True),
            )
        # Widths ngf*2^(n-1) ... ngf: 512, 256, 128, 64 at 64 px (keys netG.{0,3,6,9,12}, BN netG.{1,4,7,10}).
        widths = [ngf * 2 ** (n - 1 - i) for i in range(n)]
        layers = [nn.ConvTranspose2d(noise_dim + self.projected_embed_dim, widths[0], 4, 1, 0, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], num_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.netG = nn.Sequential(*layers)

    def forward(self, embed_vector: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.dim() != 4 or z.size(1) != self.noise_dim or z.shape[2:] != (1, 1):
            raise ValueError(f"generator: noise must be [B, {self.noise_dim}] or [B, {self.noise_dim}, 1, 1], "
                             f"got {tuple(z.shape)}")
        if self.projection is None:
            if embed_vector is not None:
                raise ValueError("generator: this model is unconditional (embed_dim=0); pass embed_vector=None")
            return self.netG(z)
        _check_embed(embed_vector, self.embed_dim, z.size(0), "generator")
        text = self.projection(embed_vector)[:, :, None, None]
        latent = torch.cat([z, text] if self.noise_first else [text, z], 1)
        return self.netG(latent)


class discriminator(nn.Module):
    """DCGAN discriminator with the text projection tiled after the 4x4 image features (the port's
    `gan_cls.discriminator` / `wgan_cls.discriminator`).

    `forward(images [B, 3, S, S], embed [B, embed_dim]) -> (scores [B], features [B, 8*ndf, 4, 4])`; the features
    (`netD_1`'s output) feed the feature-matching loss. `wgan=False`: scores are probabilities (sigmoid); `wgan=True`:
    raw critic values, one per sample (the port returns their batch mean, shape [1]). `logits=True` returns the
    pre-sigmoid values for either kind (the losses use it).

    `batch_norm=False` is the port's `improved=True` WGAN critic (no BN in `netD_1`, keys `netD_1.{0,2,4,6}`); use it
    with a gradient penalty, which is per sample and so undefined across a BatchNorm batch. `minibatch=True` adds
    `minibatch_discriminator` features (B_dim channels, after the text channels); off by default as in the port.
    """

    def __init__(self, embed_dim: int = 1024, projected_embed_dim: int = 128, ndf: int = 64, num_channels: int = 3,
                 image_size: int = 64, wgan: bool = False, batch_norm: bool = True, minibatch: bool = False,
                 minibatch_B_dim: int = 128, minibatch_C_dim: int = 16):
        super().__init__()
        n = _num_doublings(image_size, "discriminator")
        self.embed_dim, self.image_size, self.wgan = embed_dim, image_size, wgan
        widths = [ndf * 2 ** i for i in range(n)]  # 64, 128, 256, 512 at 64 px
        layers = [nn.Conv2d(num_channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1, bias=False))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.netD_1 = nn.Sequential(*layers)
        self.feature_channels = widths[-1]
        head_in = widths[-1]
        self.projector = None
        if embed_dim:
            self.projector = Concat_embed(embed_dim, projected_embed_dim)
            head_in += projected_embed_dim
        self.minibatch = None
        if minibatch:
            self.minibatch = minibatch_discriminator(widths[-1] * 16, minibatch_B_dim, minibatch_C_dim)
            head_in += minibatch_B_dim
        self.netD_2 = nn.Sequential(nn.Conv2d(head_in, 1, 4, 1, 0, bias=False))

    def forward(self, inp: torch.Tensor, embed: torch.Tensor | None = None, logits: bool = False):
        feats = self.netD_1(inp)
        x = feats
        if self.projector is not None:
            _check_embed(embed, self.embed_dim, inp.size(0), "discriminator")
            x = self.projector(x, embed)
        elif embed is not None:
            raise ValueError("discriminator: this model is unconditional (embed_dim=0); pass embed=None")
        if self.minibatch is not None:
            mb = self.minibatch(feats)[:, :, None, None].expand(-1, -1, feats.size(2), feats.size(3))
            x = torch.cat([x, mb], 1)
        out = self.netD_2(x).view(-1)
        if not (self.wgan or logits):
            out = torch.sigmoid(out)
        return out, feats


def _check_embed(embed, embed_dim: int, batch: int, what: str) -> None:
    if embed is None or embed.dim() != 2 or embed.size(1) != embed_dim or embed.size(0) != batch:
        shape = None if embed is None else tuple(embed.shape)
        raise ValueError(f"{what}: expected text embeddings of shape [{batch}, {embed_dim}], got {shape}")


def weights_init(m: nn.Module) -> None:
    """The port's `Utils.weights_init`, for `model.apply`: (transposed) convolutions N(0, 0.02); BatchNorm (1d and
    2d) weight N(1, 0.02), bias 0. Linear layers and `T_tensor` keep their own initialisation, as in the port."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def load_gan_int_cls(model: nn.Module, path: str) -> nn.Module:
    """Load a port checkpoint (`gen_<epoch>.pth` into a `generator`, `disc_<epoch>.pth` into a `discriminator`)
    strictly, with or without the DataParallel `module.` prefix."""
    what = "GAN-INT-CLS generator" if isinstance(model, generator) else "GAN-INT-CLS discriminator"
    state = load_checkpoint(path, what)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    load_state_dict_strict(model, state, source=path)
    return model


def interpolate_embeddings(embed: torch.Tensor) -> torch.Tensor:
    """Reed's INT texts (`interp_type=1`): (t_a + t_b)/2 pairing the first half of the batch with the second,
    giving B//2 embeddings (row i mixes rows i and i + B//2; with odd B the last row is unused)."""
    h = embed.size(0) // 2
    return (embed[:h] + embed[h:2 * h]) * 0.5


def generate_with_interpolation(netG: nn.Module, embed: torch.Tensor, noise: torch.Tensor | None = None):
    """One G pass on [embed; interpolate_embeddings(embed)] with fresh N(0, 1) noise (Reed's 3B/2 batch).

    Returns (fake [B], int_fake [B//2], int_embed [B//2]) for `g_loss`. `noise` ([3B/2, noise_dim]) is optional.
    """
    int_embed = interpolate_embeddings(embed)
    texts = torch.cat([embed, int_embed], 0)
    if noise is None:
        noise = torch.randn(texts.size(0), netG.noise_dim, 1, 1, device=embed.device, dtype=embed.dtype)
    images = netG(texts, noise)
    b = embed.size(0)
    return images[:b], images[b:], int_embed
