"""GAN-INT-CLS: networks, losses, config builders; trainer and family declaration are imported by their module names."""
from models.gan_int_cls.networks import (Concat_embed, discriminator, generate_with_interpolation, generator,
                                         interpolate_embeddings, load_gan_int_cls, LOSS_TYPES,
                                         minibatch_discriminator, MODEL_TYPES, weights_init)  # noqa: F401
from models.gan_int_cls.losses import (clip_weights, critic_iterations, d_loss, DLoss, g_loss, GLoss,
                                       gradient_penalty, IntClsLossOptions)  # noqa: F401
from models.gan_int_cls.build import (build_gan_int_cls, build_loss_options)  # noqa: F401
from miscc.classes import wrong_indices  # noqa: F401  (CLS's wrong-image pick, kept under this name)
