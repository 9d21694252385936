"""DAMSM text and image encoders (AttnGAN `code/model.py`: RNN_ENCODER, CNN_ENCODER; BERT-AttnGAN's text encoder).

All encoders share the contracts of the project:

- text: `forward(captions LongTensor[B, T], cap_lens LongTensor[B], hidden=None, mask=None)
  -> (words_emb [B, D, T], sent_emb [B, D])`; captions are zero-padded ids;
- image: `forward(images [B, 3, H, W] in [-1, 1]) -> (region features [B, nef, h, w], global code [B, nef])`.

State-dict key names and shapes are the originals', so released `text_encoder*.pth` / `image_encoder*.pth` files
load with `strict=True` (see `load_text_encoder` / `load_image_encoder`).
"""
from __future__ import annotations

import math
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from miscc.checkpoint import load_checkpoint, load_state_dict_strict, strip_module_prefix
from miscc.errors import CheckpointError, InputError, MissingFileError
from miscc.text import swap_pad_id

# Released AttnGAN vocabularies (len(ixtoword) of the official captions.pickle files).
RELEASED_VOCAB_SIZES = {"birds": 5450, "coco": 27297}


def _check_lengths(captions: torch.Tensor, cap_lens, name: str, min_len: int) -> torch.Tensor:
    """`cap_lens` as an int64 tensor of shape [B] with min_len <= len <= T, or a ValueError saying what is wrong."""
    if captions.dim() != 2:
        raise ValueError(f"{name}: captions must be [B, T] word ids, got shape {tuple(captions.shape)}")
    lens = torch.as_tensor(cap_lens).reshape(-1).long()
    batch, steps = captions.shape
    if lens.numel() != batch:
        raise ValueError(f"{name}: {lens.numel()} caption lengths for a batch of {batch} captions")
    if batch and (int(lens.min()) < min_len or int(lens.max()) > steps):
        raise ValueError(
            f"{name}: caption lengths must lie in [{min_len}, {steps}] (T = captions.shape[1]), "
            f"got min {int(lens.min())}, max {int(lens.max())}")
    return lens


# --------------------------------------------------------------------------------------------------------------
# Text encoders
# --------------------------------------------------------------------------------------------------------------
class RNN_ENCODER(nn.Module):
    """AttnGAN's bi-directional LSTM (or GRU) text encoder.

    Embedding(ntoken, ninput) with uniform(-0.1, 0.1) init -> Dropout(drop_prob) -> RNN with
    nhidden // num_directions units per direction over the packed (length-masked) sequence.
    `words_emb` = the RNN outputs transposed to [B, nhidden, T] (zeros past each caption's length);
    `sent_emb` = the last layer's final hidden states, [forward, backward] concatenated.

    Differences from the original, none of which changes a released model's outputs:
    lengths go to `pack_padded_sequence` on the CPU with `enforce_sorted=False` (modern torch needs CPU lengths; an
    unsorted batch now works, a sorted one gives the same numbers); `words_emb` is padded to T = captions.shape[1]
    rather than to the longest caption; with nlayers > 1 the sentence is the last layer's states (the original's
    `view` mixed layers into extra rows); the RNN's inter-layer dropout is only passed when nlayers > 1 (it is a
    no-op for one layer and modern torch warns about it).
    """

    def __init__(self, ntoken: int, ninput: int = 300, drop_prob: float = 0.5, nhidden: int = 256,
                 nlayers: int = 1, bidirectional: bool = True, rnn_type: str = "LSTM"):
        super().__init__()
        if rnn_type not in ("LSTM", "GRU"):
            raise InputError(f"RNN_ENCODER: rnn_type must be 'LSTM' or 'GRU', got {rnn_type!r}")
        self.num_directions = 2 if bidirectional else 1
        if nhidden % self.num_directions:
            raise InputError(f"RNN_ENCODER: nhidden={nhidden} must be divisible by the {self.num_directions} "
                             "directions")
        self.ntoken = ntoken
        self.ninput = ninput
        self.drop_prob = drop_prob
        self.nlayers = nlayers
        self.bidirectional = bidirectional
        self.rnn_type = rnn_type
        self.nhidden = nhidden // self.num_directions  # per direction, as in the original
        self.embedding_dim = nhidden  # D of words_emb / sent_emb

        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        rnn_cls = nn.LSTM if rnn_type == "LSTM" else nn.GRU
        self.rnn = rnn_cls(ninput, self.nhidden, nlayers, batch_first=True,
                           dropout=drop_prob if nlayers > 1 else 0.0, bidirectional=bidirectional)
        self.init_weights()

    def init_weights(self) -> None:
        """Embedding uniform(-0.1, 0.1); the RNN keeps PyTorch's default init (as the original)."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    def init_hidden(self, bsz: int):
        """Zero initial state(s) [nlayers * num_directions, bsz, nhidden]; the same as passing hidden=None."""
        weight = next(self.parameters())
        shape = (self.nlayers * self.num_directions, bsz, self.nhidden)
        if self.rnn_type == "LSTM":
            return weight.new_zeros(shape), weight.new_zeros(shape)
        return weight.new_zeros(shape)

    def forward(self, captions: torch.Tensor, cap_lens: torch.Tensor, hidden=None, mask=None):
        """captions [B, T] ids, cap_lens [B] (>= 1) -> words_emb [B, nhidden, T], sent_emb [B, nhidden].

        `mask` is accepted for the shared text-encoder signature and unused (as in the original).
        """
        lens = _check_lengths(captions, cap_lens, "RNN_ENCODER", min_len=1).cpu()
        batch, steps = captions.shape
        emb = self.drop(self.encoder(captions))
        packed = pack_padded_sequence(emb, lens, batch_first=True, enforce_sorted=False)
        output, hidden = self.rnn(packed, hidden)
        output = pad_packed_sequence(output, batch_first=True, total_length=steps)[0]
        words_emb = output.transpose(1, 2)
        h_n = hidden[0] if self.rnn_type == "LSTM" else hidden
        last = h_n.view(self.nlayers, self.num_directions, batch, self.nhidden)[-1]
        sent_emb = last.transpose(0, 1).reshape(batch, self.num_directions * self.nhidden)
        return words_emb, sent_emb


class BERT_ENCODER(nn.Module):
    """A pretrained BERT-style transformer as DAMSM text encoder (BERT-AttnGAN, fixed and generalised).

    The model and tokenizer come from a local directory (`AutoModel`/`AutoTokenizer`, `local_files_only=True`;
    nothing is downloaded). Input: WordPiece ids without special tokens, zero-padded, plus `cap_lens`. The encoder
    builds `[CLS] ids [SEP] [PAD]...` with the matching attention mask, so padding does not change a caption's
    features. `words_emb[:, :, t]` is the last hidden state of input token t (zeros at padding); `sent_emb` is the
    [CLS] state (`sentence='cls'`), BERT's pooler output (`'pooler'`, BERT-AttnGAN's choice) or the mean over the
    attended tokens [CLS] ids [SEP] (`'mean'`, sentence-transformers' pooling). With `projection`, separate
    Linear layers (`word_proj`, `sent_proj`) map both to `embedding_dim`; without it the outputs keep the hidden
    size (BERT-AttnGAN's 768). The transformer sits under `embedder` (BERT-AttnGAN's key prefix); it is frozen (no
    gradients, always in eval mode) unless `finetune`.

    Fixes relative to BERT-AttnGAN: any batch size (it hard-coded 30), [CLS]/[SEP] added, padding masked out of
    attention (it attended to [PAD]), a projection option so the usual 256-d G/D fit.
    """

    SENTENCE_MODES = ("cls", "pooler", "mean")

    def __init__(self, model_dir, embedding_dim: int | None = 256, sentence: str = "cls", projection: bool = True,
                 finetune: bool = False):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        model_dir = os.fspath(model_dir) if model_dir else ""
        what = "expected a local transformers model folder with config.json, the weights and the tokenizer files"
        if not model_dir or not os.path.isdir(model_dir):
            raise MissingFileError(f"BERT model directory not found: {model_dir!r} ({what}; nothing is downloaded)")
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise MissingFileError(f"{model_dir} is not a transformers model directory: config.json is missing "
                                    f"({what})")
        if sentence not in self.SENTENCE_MODES:
            raise InputError(f"BERT_ENCODER: sentence must be one of {self.SENTENCE_MODES}, got {sentence!r}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"{model_dir}: cannot load the tokenizer ({e})") from e
        try:
            self.embedder = AutoModel.from_pretrained(model_dir, local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"{model_dir}: cannot load the transformer model ({e})") from e

        self.model_dir = model_dir
        self.sentence = sentence
        self.projection = projection
        self.finetune = finetune
        self.hidden_size = int(self.embedder.config.hidden_size)
        self.max_positions = int(getattr(self.embedder.config, "max_position_embeddings", 512))
        if sentence == "pooler" and getattr(self.embedder, "pooler", None) is None:
            raise InputError(f"{model_dir}: sentence='pooler' but this {type(self.embedder).__name__} has no pooler")

        tok = self.tokenizer
        self.cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        self.sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        if self.cls_id is None or self.sep_id is None:
            raise InputError(f"{model_dir}: the tokenizer defines no [CLS]/<s> or [SEP]/</s> token")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

        if projection:
            if not embedding_dim or embedding_dim <= 0:
                raise InputError(f"BERT_ENCODER: projection=True needs a positive embedding_dim, got {embedding_dim}")
            self.embedding_dim = int(embedding_dim)
            self.word_proj = nn.Linear(self.hidden_size, self.embedding_dim)
            self.sent_proj = nn.Linear(self.hidden_size, self.embedding_dim)
        else:
            if embedding_dim not in (None, self.hidden_size):
                raise InputError(
                    f"BERT_ENCODER: projection=False outputs the hidden size {self.hidden_size} of {model_dir}, "
                    f"but embedding_dim={embedding_dim}; set the embedding size (TEXT.EMBEDDING_DIM) to "
                    f"{self.hidden_size} or enable the projection (TEXT.BERT_PROJECTION)")
            self.embedding_dim = self.hidden_size

        if not finetune:
            self.embedder.requires_grad_(False)
            self.embedder.eval()

    def train(self, mode: bool = True):
        """As nn.Module.train, but a frozen transformer stays in eval mode (no dropout)."""
        super().train(mode)
        if not self.finetune:
            self.embedder.eval()
        return self

    def build_inputs(self, captions: torch.Tensor, cap_lens) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_ids` [B, T+2] = [CLS] ids [SEP] [PAD]... and `attention_mask` [B, T+2] (1 on [CLS], ids, [SEP]).

        Input padding (0 by contract) is replaced by the tokenizer's pad id, which need not be 0; with a pad id p != 0
        the captions store text id 0 as p (`swap_pad_id`), which is undone here.
        """
        lens = _check_lengths(captions, cap_lens, "BERT_ENCODER", min_len=0).to(captions.device)
        batch, steps = captions.shape
        if steps + 2 > self.max_positions:
            raise InputError(f"BERT_ENCODER: {steps} tokens + [CLS]/[SEP] exceed the model's "
                             f"{self.max_positions} positions")
        positions = torch.arange(steps + 2, device=captions.device)
        attention_mask = (positions.unsqueeze(0) < (lens + 2).unsqueeze(1)).long()
        is_word = positions[:steps].unsqueeze(0) < lens.unsqueeze(1)
        input_ids = torch.full((batch, steps + 2), self.pad_id, dtype=torch.long, device=captions.device)
        input_ids[:, 0] = self.cls_id
        words = swap_pad_id(captions.long(), self.pad_id)
        input_ids[:, 1:steps + 1] = torch.where(is_word, words, torch.full_like(words, self.pad_id))
        input_ids[torch.arange(batch, device=captions.device), lens + 1] = self.sep_id
        return input_ids, attention_mask

    def forward(self, captions: torch.Tensor, cap_lens: torch.Tensor, hidden=None, mask=None):
        """captions [B, T] WordPiece ids (no special tokens, zero-padded), cap_lens [B]
        -> words_emb [B, D, T] (zeros at padding), sent_emb [B, D]. `hidden` and `mask` are unused."""
        input_ids, attention_mask = self.build_inputs(captions, cap_lens)
        steps = captions.shape[1]
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            out = self.embedder(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state
        words = states[:, 1:steps + 1]
        if self.sentence == "cls":
            sent = states[:, 0]
        elif self.sentence == "pooler":
            sent = out.pooler_output
        else:
            weights = attention_mask.unsqueeze(-1).to(states.dtype)
            sent = (states * weights).sum(1) / weights.sum(1)
        if self.projection:
            words = self.word_proj(words)
            sent = self.sent_proj(sent)
        is_word = attention_mask[:, 2:].unsqueeze(-1).to(words.dtype)  # position t is a word iff t < len
        words_emb = (words * is_word).transpose(1, 2)
        return words_emb, sent

    def encode_text(self, texts, max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise sentences into the encoder's input: ids [B, T] without special tokens, zero-padded, and lens [B].

        A caption longer than `max_len` keeps its first `max_len` tokens; T = max_len (or the longest caption when
        max_len is None). An empty caption is an error (DAMSM losses and the RNN need at least one token).
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, ids in enumerate(encoded):
            if not ids:
                raise InputError(f"BERT_ENCODER.encode_text: caption {i} ({texts[i]!r}) has no tokens")
            if 0 in ids and not self.pad_id:
                raise InputError(f"BERT_ENCODER.encode_text: caption {i} ({texts[i]!r}) contains token id 0, which "
                                 "the zero-padded caption contract reserves for padding")
        encoded = [swap_pad_id(ids, self.pad_id) for ids in encoded]
        if max_len is not None:
            encoded = [ids[:max_len] for ids in encoded]
        lens = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        steps = max_len if max_len is not None else (int(lens.max()) if encoded else 0)
        ids = torch.zeros(len(encoded), steps, dtype=torch.long)
        for i, row in enumerate(encoded):
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, lens


# --------------------------------------------------------------------------------------------------------------
# Image encoders
# --------------------------------------------------------------------------------------------------------------
INCEPTION_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                   "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                   "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _inception_v3(weights_path: str | None) -> nn.Module:
    """torchvision Inception-v3 (no aux head), loaded from a local `inception_v3_google-*.pth` when given."""
    from torchvision.models import inception_v3

    if weights_path and not os.path.isfile(weights_path):
        raise MissingFileError(
            f"Inception-v3 ImageNet weights not found: {weights_path} (expected torchvision's "
            "inception_v3_google-0cc3c7bd.pth or the older inception_v3_google-1a9a5a14.pth; nothing is downloaded)")
    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    if weights_path:
        state = load_checkpoint(weights_path, "Inception-v3 ImageNet weights")
        if not isinstance(state, dict):
            raise InputError(f"{weights_path}: expected a state dict, got {type(state).__name__}")
        state = {k: v for k, v in strip_module_prefix(state).items() if not k.startswith("AuxLogits.")}
        load_state_dict_strict(net, state, source=weights_path)
    else:
        warnings.warn("CNN_ENCODER: no Inception-v3 weights given, so the frozen trunk is randomly initialised. "
                      "That is fine when a trained image_encoder*.pth is loaded next; to train DAMSM, pass "
                      "torchvision's inception_v3_google-*.pth (DAMSM.INCEPTION_WEIGHTS).", stacklevel=3)
    return net


class CNN_ENCODER(nn.Module):
    """AttnGAN's DAMSM image encoder: a frozen Inception-v3 trunk plus two trainable projections.

    The [-1, 1] input is bilinearly resized to 299x299 with align_corners=True (the torch-0.3 semantics the
    released `image_encoder200.pth` was trained with; modern torch defaults to False). `emb_features`
    (1x1 conv 768 -> nef, no bias) on Mixed_6e gives the 17x17 region features; Mixed_7c -> 8x8 average pool ->
    `emb_cnn_code` Linear(2048, nef) gives the global code. Module names are torchvision's, so the official
    473-key state dict loads strictly (files without `num_batches_tracked` included).

    As in the original, `train()` puts the trunk's BatchNorms in training mode (batch statistics, drifting running
    stats, which the released checkpoint stores); `freeze_bn=True` keeps the trunk in eval mode instead.
    """

    def __init__(self, nef: int = 256, inception_weights: str | None = None, freeze_bn: bool = False):
        super().__init__()
        self.nef = nef
        self.freeze_bn = freeze_bn
        net = _inception_v3(inception_weights)
        for name in INCEPTION_TRUNK:
            module = getattr(net, name)
            module.requires_grad_(False)
            setattr(self, name, module)
        self.emb_features = nn.Conv2d(768, nef, kernel_size=1, bias=False)
        self.emb_cnn_code = nn.Linear(2048, nef)
        self.init_trainable_weights()
        if freeze_bn:
            self._trunk_eval()

    def init_trainable_weights(self) -> None:
        """Projection weights uniform(-0.1, 0.1); the Linear bias keeps PyTorch's default (as the original)."""
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def _trunk_eval(self) -> None:
        for name in INCEPTION_TRUNK:
            getattr(self, name).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:
            self._trunk_eval()
        return self

    def forward(self, x: torch.Tensor):
        """x [B, 3, H, W] in [-1, 1] -> features [B, nef, 17, 17], cnn_code [B, nef]."""
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True)
        x = self.Conv2d_1a_3x3(x)
        x = self.Conv2d_2a_3x3(x)
        x = self.Conv2d_2b_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_3b_1x1(x)
        x = self.Conv2d_4a_3x3(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in INCEPTION_TRUNK[5:13]:  # Mixed_5b .. Mixed_6e -> 768 x 17 x 17
            x = getattr(self, name)(x)
        features = self.emb_features(x)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # 2048 x 8 x 8
        x = F.avg_pool2d(x, kernel_size=8).flatten(1)
        cnn_code = self.emb_cnn_code(x)
        return features, cnn_code


class SMALL_CNN_ENCODER(nn.Module):
    """A small, fully trainable DAMSM image encoder for small images (the shapes demo, CPU runs).

    Not in the originals. Any input is first resized (bilinear, antialiased when shrinking) to `image_size`, so it
    can score G's largest output whatever its size. Stride-2 3x3 conv blocks (GroupNorm, LeakyReLU 0.2) halve the
    map and double the channels, from `ndf`, until it is `region_size` wide; one stride-1 block refines it and
    `emb_features` (1x1 conv, no bias) gives the region features there. One more block halves the map again and
    `emb_cnn_code`, a Linear on the flattened map (it keeps where things are, which captions talk about), gives the
    global code. GroupNorm keeps every image's features independent of the rest of the batch, in training and
    evaluation alike.
    """

    def __init__(self, nef: int = 256, image_size: int = 64, ndf: int = 32, region_size: int = 8):
        super().__init__()
        n_down = round(math.log2(image_size / region_size)) if image_size > region_size else 0
        if n_down < 1 or region_size * 2 ** n_down != image_size or region_size < 2 or region_size % 2:
            raise InputError(f"SMALL_CNN_ENCODER: image_size={image_size} must be region_size={region_size} "
                             "(even, >= 2) times a power of two >= 2")
        self.nef = nef
        self.image_size = image_size

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                 nn.GroupNorm(min(8, cout // 4), cout), nn.LeakyReLU(0.2, inplace=True))

        layers = [block(3, ndf, 2)]
        channels = ndf
        for _ in range(n_down - 1):
            layers.append(block(channels, channels * 2, 2))
            channels *= 2
        layers.append(block(channels, channels, 1))
        self.trunk = nn.Sequential(*layers)
        self.emb_features = nn.Conv2d(channels, nef, kernel_size=1, bias=False)
        self.global_block = block(channels, channels * 2, 2)
        self.emb_cnn_code = nn.Linear(channels * 2 * (region_size // 2) ** 2, nef)

    def forward(self, x: torch.Tensor):
        """x [B, 3, H, W] in [-1, 1] -> features [B, nef, r, r] (r = region_size), cnn_code [B, nef]."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            shrink = x.shape[-1] > self.image_size or x.shape[-2] > self.image_size
            x = F.interpolate(x.float(), size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        x = self.trunk(x)
        features = self.emb_features(x)
        cnn_code = self.emb_cnn_code(self.global_block(x).flatten(1))
        return features, cnn_code
