"""AttnGAN / BERT-AttnGAN: networks, losses, config builders (`from models.attngan import G_NET` works as before the
package split). The trainer (`models.attngan.trainer`) and the family declaration (`models.attngan.family`) are
imported by name, not from here, so importing the networks never pulls in the training loop."""
from models.attngan.build import build_discriminators, build_generator  # noqa: F401
from models.attngan.losses import ADV_LOSSES, KL_loss, discriminator_loss, generator_adversarial_loss  # noqa: F401
from models.attngan.networks import (Block3x3_leakRelu, CA_NET, D_GET_LOGITS, D_NET, D_NET128, D_NET256, D_NET64,
                                     GET_IMAGE_G, GLU, G_DCGAN, G_NET, GlobalAttentionGeneral, GridWordAttention,
                                     INIT_STAGE_G,
                                     NEXT_STAGE_G, ResBlock, TextCondition, UPSAMPLE_MODES, WordContext, WordGrid,
                                     add_spectral_norm, conv1x1, conv3x3, downBlock, encode_image_by_16times,
                                     upBlock, weights_init)  # noqa: F401
