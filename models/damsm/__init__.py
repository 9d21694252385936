"""DAMSM text and image encoders and their builders/loaders; the pre-training trainer is `models.damsm.trainer`."""
from models.damsm.build import (build_image_encoder, build_text_encoder, load_image_encoder,  # noqa: F401
                                load_text_encoder)
from models.damsm.losses import damsm_losses  # noqa: F401
from models.damsm.networks import (BERT_ENCODER, CNN_ENCODER, INCEPTION_TRUNK, RELEASED_VOCAB_SIZES, RNN_ENCODER,
                                   SMALL_CNN_ENCODER)  # noqa: F401
