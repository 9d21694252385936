"""SSA-GAN: networks, losses, config builders; trainer and family declaration are imported by their module names."""
from miscc.noise import truncated_noise  # noqa: F401
from models.ssagan.build import build_discriminators, build_generator  # noqa: F401
from models.ssagan.losses import DLoss, hinge_d_loss, hinge_g_loss, ma_gp, magp_loss  # noqa: F401
from models.ssagan.networks import (AFFINE_HIDDEN, D_GET_LOGITS, MASK_HIDDEN, G_Block, NetD, NetG,  # noqa: F401
                                    affine, discriminator_channel_plan, generator_channel_plan,
                                    load_ssagan_generator, resD)
