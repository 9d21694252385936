"""DAMSM encoders from a config tree (TEXT.*, DAMSM.*, RNN_TYPE) and their strict loaders."""
from __future__ import annotations

import torch
import torch.nn as nn

from miscc.checkpoint import load_checkpoint, load_state_dict_strict, strip_module_prefix
from miscc.errors import InputError
from models.damsm.networks import BERT_ENCODER, CNN_ENCODER, RELEASED_VOCAB_SIZES, RNN_ENCODER, SMALL_CNN_ENCODER


def build_text_encoder(cfg, n_words: int) -> nn.Module:
    """The text encoder named by cfg.TEXT.ENCODER: 'rnn' (RNN_ENCODER over n_words, cfg.RNN_TYPE) or 'bert'."""
    from miscc.config import resolve_path

    kind = cfg.TEXT.ENCODER
    if kind == "rnn":
        return RNN_ENCODER(n_words, nhidden=cfg.TEXT.EMBEDDING_DIM, rnn_type=cfg.RNN_TYPE)
    if kind == "bert":
        if not cfg.TEXT.BERT_PATH:
            raise InputError("TEXT.ENCODER is 'bert' but TEXT.BERT_PATH is empty: set it to a local model folder")
        return BERT_ENCODER(resolve_path(cfg.TEXT.BERT_PATH), embedding_dim=cfg.TEXT.EMBEDDING_DIM,
                            sentence=cfg.TEXT.BERT_SENTENCE, projection=cfg.TEXT.BERT_PROJECTION,
                            finetune=cfg.TEXT.BERT_FINETUNE)
    raise InputError(f"TEXT.ENCODER must be 'rnn' or 'bert', got {kind!r}")


def build_image_encoder(cfg) -> nn.Module:
    """The image encoder named by cfg.DAMSM.IMAGE_ENCODER: 'inception' (CNN_ENCODER) or 'small'."""
    from miscc.config import resolve_path

    kind = cfg.DAMSM.IMAGE_ENCODER
    nef = cfg.TEXT.EMBEDDING_DIM
    if kind == "inception":
        weights = cfg.DAMSM.INCEPTION_WEIGHTS
        return CNN_ENCODER(nef, inception_weights=resolve_path(weights) if weights else None)
    if kind == "small":
        return SMALL_CNN_ENCODER(nef, image_size=cfg.DAMSM.IMAGE_SIZE)
    raise InputError(f"DAMSM.IMAGE_ENCODER must be 'inception' or 'small', got {kind!r}")


def _plain_state_dict(path: str, what: str) -> dict:
    state = load_checkpoint(path, what)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a plain state dict (parameter name -> tensor) for the {what}")
    return strip_module_prefix(state)


def load_text_encoder(model: nn.Module, path: str) -> nn.Module:
    """Load a `text_encoder*.pth` state dict strictly into `model` (RNN_ENCODER or BERT_ENCODER); returns it.

    A vocabulary mismatch is reported as such (the most common failure with released encoders, AttnGAN #43/#45).
    """
    state = _plain_state_dict(path, "text encoder")
    if isinstance(model, RNN_ENCODER) and "encoder.weight" in state:
        rows = state["encoder.weight"].shape[0]
        if rows != model.ntoken:
            known = ", ".join(f"{v:,} for {k}" for k, v in RELEASED_VOCAB_SIZES.items())
            raise InputError(
                f"{path}: vocabulary mismatch: the file's encoder.weight has {rows:,} words but the dataset's "
                f"vocabulary has n_words={model.ntoken:,}. A text encoder only fits the captions.pickle it was "
                f"trained with; released encoders need the released captions.pickle ({known}), not a rebuilt one.")
    if isinstance(model, BERT_ENCODER):
        # Saved by transformers 3.1-4.30 only (huggingface/transformers#25330); a fixed arange either way.
        key = "embedder.embeddings.position_ids"
        if key in state and key not in model.state_dict():
            state.pop(key)
    load_state_dict_strict(model, state, source=path)
    return model


def load_image_encoder(model: nn.Module, path: str) -> nn.Module:
    """Load an `image_encoder*.pth` state dict strictly into `model` (CNN_ENCODER or SMALL_CNN_ENCODER).

    Every trunk buffer comes from the file: the released Inception encoder's BatchNorm statistics differ from
    torchvision's (see CNN_ENCODER).
    """
    state = _plain_state_dict(path, "image encoder")
    file_inception = any(k.startswith("Mixed_") for k in state)
    if file_inception != isinstance(model, CNN_ENCODER):
        file_kind = "an Inception (CNN_ENCODER)" if file_inception else "a non-Inception (e.g. SMALL_CNN_ENCODER)"
        raise InputError(f"{path} holds {file_kind} image encoder, but the model is a {type(model).__name__}: "
                         "set DAMSM.IMAGE_ENCODER to match the file")
    load_state_dict_strict(model, state, source=path)
    return model
