"""DF-GAN 2022 / 2021: networks, losses, config builders; the checkpoint files (`checkpoint`), trainer and family
declaration are imported by their module names."""
from models.dfgan.build import build_discriminator, build_generator, version  # noqa: F401
from models.dfgan.losses import DLoss, d_loss_2022, g_loss_2021, g_loss_2022, hinge, ma_gp, roll_by_one  # noqa: F401
from models.dfgan.networks import (DFBLK, Affine, D_Block, G_Block, G_Block2021, NetC, NetD, NetD2021,  # noqa: F401
                                   NetG, NetG2021, affine, get_D_in_out_chs, get_G_in_out_chs)
