"""SSA-GAN: networks, losses, config builders; trainer and family declaration are imported by their module names."""
from models.ssagan.networks import (affine, AFFINE_HIDDEN, D_GET_LOGITS, discriminator_channel_plan, G_Block,
                                    generator_channel_plan, load_ssagan_generator, MASK_HIDDEN, NetD, NetG,
                                    resD)  # noqa: F401
from models.ssagan.losses import (DLoss, hinge_d_loss, hinge_g_loss, magp_loss)  # noqa: F401
from models.ssagan.build import (build_discriminators, build_generator)  # noqa: F401
from miscc.noise import truncated_noise  # noqa: F401  (SSA-GAN's name for it, kept)
