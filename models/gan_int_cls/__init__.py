"""GAN-INT-CLS: networks, losses, config builders; trainer and family declaration are imported by their module names."""
from miscc.classes import wrong_indices  # noqa: F401
from models.gan_int_cls.build import build_gan_int_cls, build_loss_options  # noqa: F401
from models.gan_int_cls.losses import (DLoss, GLoss, IntClsLossOptions, clip_weights, critic_iterations, d_loss,
                                       g_loss, gradient_penalty)  # noqa: F401
from models.gan_int_cls.networks import (Concat_embed, LOSS_TYPES, MODEL_TYPES, discriminator,
                                         generate_with_interpolation, generator, interpolate_embeddings,
                                         load_gan_int_cls, minibatch_discriminator, weights_init)  # noqa: F401
