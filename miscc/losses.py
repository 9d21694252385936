"""DAMSM losses (AttnGAN `code/GlobalAttention.py` `func_attention`, `code/miscc/losses.py` `words_loss`/`sent_loss`),
the DAMSM term every generator family adds to its own losses (`damsm_generator_loss`), the word-swap hard negatives
(ours) that DAMSM pre-training and that term share (`swap_negatives`), and ControlGAN's perceptual term in the DAMSM
image encoder's features (`perceptual_loss`); a family's other losses live in `models/<family>/losses.py`.

Numerically the original's, with the Python-3 / modern-torch fixes: bool masks instead of `torch.ByteTensor`,
masks built on the scores' device (no `cfg.CUDA`), `class_ids` accepted as a numpy array, list or tensor, and
batch size 1 supported (the original's `.squeeze()` calls collapsed a 1x1 score matrix to a scalar).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from miscc.errors import InputError
from miscc.modules import float_softmax


def cosine_similarity(x1: torch.Tensor, x2: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity along `dim`: x1.x2 / max(|x1| |x2|, eps) (the original's formula, without its squeeze)."""
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return w12 / (w1 * w2).clamp(min=eps)


def func_attention(query: torch.Tensor, context: torch.Tensor, gamma1: float, valid: torch.Tensor | None = None):
    """Word-to-region attention of DAMSM (AttnGAN Eq. 7-9).

    query [B, D, L] (words), context [B, D, H, W] (regions) -> (region context per word [B, D, L],
    attention [B, L, H, W]). Scores s = regions^T words (Eq. 7) are normalised over the words for each region
    (Eq. 8), scaled by gamma1 and normalised over the regions for each word (Eq. 9). `valid` (bool [B, L], ours)
    leaves the words where it is False out of Eq. (8), as if each caption were cut to its length.
    """
    batch_size, query_len = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    source_len = ih * iw
    context = context.reshape(batch_size, -1, source_len)
    attn = torch.bmm(context.transpose(1, 2), query)  # B x S x L, Eq. (7)
    if valid is not None:
        attn = attn.masked_fill(~valid.unsqueeze(1), float("-inf"))
    attn = float_softmax(attn, 2)  # Eq. (8)
    attn = attn.transpose(1, 2) * gamma1  # B x L x S
    attn = float_softmax(attn, 2).to(context.dtype)  # Eq. (9)
    weighted_context = torch.bmm(context, attn.transpose(1, 2))  # B x D x L
    return weighted_context, attn.reshape(batch_size, query_len, ih, iw)


def class_mask(class_ids, device=None) -> torch.Tensor:
    """Bool [B, B]: True where captions i != j come from the same class (not valid negatives for DAMSM)."""
    if torch.is_tensor(class_ids):
        ids = class_ids.detach().reshape(-1)
    else:
        ids = torch.as_tensor(np.asarray(class_ids)).reshape(-1)
    if device is not None:
        ids = ids.to(device)
    mask = ids.unsqueeze(0) == ids.unsqueeze(1)
    mask.fill_diagonal_(False)
    return mask


def _check_batch(name: str, batch_size: int, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.size(0) != batch_size:
            raise ValueError(f"{name}: batch_size={batch_size} but a tensor has {t.size(0)} rows "
                             f"(shape {tuple(t.shape)})")


def words_similarity(img_features: torch.Tensor, words_emb: torch.Tensor, cap_lens, gamma1: float = 4.0,
                     gamma2: float = 5.0, eps: float = 1e-8):
    """The word-level image-text matching scores of DAMSM, before gamma3 and masking.

    img_features [B, D, H, W], words_emb [B, D, T], cap_lens [B] -> (sims [B, B] with sims[j, i] = the score of
    image j and caption i, att_maps: list of B tensors [1, cap_lens[i], H, W], caption i attending to image i).
    Each caption is cut to its length, attends over every image's regions (func_attention, Eq. 7-9) and scores
    R(Q, D) = log sum_w exp(gamma2 * cos(word, region context)) (Eq. 10, with the original's missing 1/gamma2 power).

    The original loops over captions and copies every image's features for each; here every caption is scored
    against all images at once, its padding (the words past its length) left out of Eq. (8) and of Eq. (10)'s sum,
    with the same formulas (equal up to float rounding): one pass instead of one per caption length, the attention
    softmaxes in float32 (`float_softmax`), and the cosine of Eq. (10) read off the attention without forming the
    region context c = C·a of every (image, word): c·w = a·(Cᵀw), the Eq. (7) scores weighted by the attention,
    and |c|² = aᵀ(CᵀC)a, the image's region Gram matrix.
    """
    batch_size = words_emb.size(0)
    lens = [int(n) for n in torch.as_tensor(cap_lens).reshape(-1).tolist()]
    if len(lens) != batch_size:
        raise ValueError(f"words_loss: {len(lens)} caption lengths for {batch_size} captions")
    if lens and (min(lens) < 1 or max(lens) > words_emb.size(2)):
        raise ValueError(f"words_loss: caption lengths must lie in [1, {words_emb.size(2)}], got {lens}")
    n_img, dim, ih, iw = img_features.shape
    source_len, length = ih * iw, max(lens)
    context = img_features.reshape(n_img, dim, source_len)
    word = words_emb[:, :, :length].transpose(0, 1)  # D x B x L
    valid = torch.arange(length, device=words_emb.device) < torch.as_tensor(lens, device=words_emb.device)[:, None]
    # scores[j, s, i, l]: region s of image j, word l of caption i (Eq. 7)
    scores = context.transpose(1, 2).reshape(n_img * source_len, dim) @ word.reshape(dim, batch_size * length)
    scores = scores.view(n_img, source_len, batch_size, length)
    attn = float_softmax(scores.masked_fill(~valid, float("-inf")), 3)  # Eq. (8): over the caption's words
    attn = float_softmax(attn * gamma1, 1)  # Eq. (9): over the regions
    att_maps = [attn[i, :, i, :n].t().reshape(1, n, ih, iw).to(img_features.dtype) for i, n in enumerate(lens)]
    dot = (attn * scores).sum(1)  # B_img x B x L: (region context of the word) . word
    gram = torch.bmm(context.transpose(1, 2), context)  # B_img x S x S
    flat = attn.reshape(n_img, source_len, batch_size * length)
    ctx_norm = (flat * torch.bmm(gram, flat.to(gram.dtype))).sum(1).clamp(min=1e-30).sqrt()  # |region context|
    norms = ctx_norm.view(n_img, batch_size, length) * torch.norm(word, 2, dim=0).unsqueeze(0)
    cos = dot / norms.clamp(min=eps)
    sims = torch.log(torch.exp(cos * gamma2).masked_fill(~valid, 0).sum(dim=2))  # B_img x B, Eq. (10), its words
    return sims, att_maps


def words_loss(img_features, words_emb, labels, cap_lens, class_ids, batch_size,
               gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0):
    """DAMSM word loss: (loss0 image->caption CE, loss1 caption->image CE, att_maps).

    The B x B scores (words_similarity) are scaled by gamma3; pairs (i != j) of the same class are set to -inf;
    cross-entropy against `labels` (normally arange(B)) over rows and over columns. With labels None the losses are
    None (as the original).
    """
    _check_batch("words_loss", batch_size, img_features, words_emb)
    sims, att_maps = words_similarity(img_features, words_emb, cap_lens, gamma1, gamma2)
    sims = sims * gamma3
    if class_ids is not None:
        sims = sims.masked_fill(class_mask(class_ids, sims.device), float("-inf"))
    if labels is None:
        return None, None, att_maps
    return F.cross_entropy(sims, labels), F.cross_entropy(sims.t(), labels), att_maps


def sent_similarity(cnn_code: torch.Tensor, rnn_code: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity matrix [B_img, B_txt] between global image codes and sentence embeddings."""
    scores = cnn_code @ rnn_code.t()
    norms = torch.norm(cnn_code, 2, dim=1, keepdim=True) @ torch.norm(rnn_code, 2, dim=1, keepdim=True).t()
    return scores / norms.clamp(min=eps)


def sent_loss(cnn_code, rnn_code, labels, class_ids, batch_size, gamma3: float = 10.0, eps: float = 1e-8):
    """DAMSM sentence loss: (loss0, loss1) = CE over rows and columns of gamma3 * cos(cnn_code_i, rnn_code_j),
    same-class off-diagonal pairs set to -inf. With labels None the losses are None (as the original)."""
    _check_batch("sent_loss", batch_size, cnn_code, rnn_code)
    scores = sent_similarity(cnn_code, rnn_code, eps) * gamma3
    if class_ids is not None:
        scores = scores.masked_fill(class_mask(class_ids, scores.device), float("-inf"))
    if labels is None:
        return None, None
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def swap_word_groups(groups: list[str], wordtoix: dict[str, int]) -> list[list[int]]:
    """DAMSM.SWAP_NEGATIVES (["circle square triangle", ...]) as lists of vocabulary ids; every word must be in the
    vocabulary and every group needs two different words."""
    out = []
    for g in groups:
        words = list(dict.fromkeys(str(g).replace(":", " ").split()))
        if len(words) < 2:
            raise InputError(f"DAMSM.SWAP_NEGATIVES: group {g!r} needs two different words at least")
        missing = [w for w in words if w not in wordtoix]
        if missing:
            raise InputError(f"DAMSM.SWAP_NEGATIVES: group {g!r}: {missing} not in the captions' vocabulary")
        out.append([wordtoix[w] for w in words])
    return out


def swap_negatives(captions: torch.Tensor, cap_lens: torch.Tensor, groups: list[list[int]],
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard negative captions: in each caption one word of a swap group (chosen at random among its words that are
    in a group) is replaced by another word of the same group ("a red circle on the left" -> "a red square on the
    left"). Returns (negatives [B, T], has_negative [B] bool: False where a caption holds no group word; its row is
    then the caption unchanged). Lengths, and so the batch's sort order, stay as they are."""
    neg = captions.clone()
    has = torch.zeros(captions.size(0), dtype=torch.bool)
    group_of = {w: g for g in groups for w in g}
    for i, (ids, n) in enumerate(zip(captions.tolist(), torch.as_tensor(cap_lens).reshape(-1).tolist())):
        where = [t for t in range(n) if ids[t] in group_of]
        if not where:
            continue
        t = where[int(torch.randint(len(where), (1,), generator=generator))]
        others = [w for w in group_of[ids[t]] if w != ids[t]]
        neg[i, t] = others[int(torch.randint(len(others), (1,), generator=generator))]
        has[i] = True
    return neg, has.to(captions.device)


def paired_words_similarity(img_features: torch.Tensor, words_emb: torch.Tensor, cap_lens, gamma1: float = 4.0,
                            gamma2: float = 5.0, eps: float = 1e-8) -> torch.Tensor:
    """[B]: the word-level score of image i and caption i only, `words_similarity(...)[0].diagonal()` without the
    B x B work, in one pass: the words past a caption's length are masked out of Eq. (8) and (10) instead of cut
    off (the same scores up to float rounding; one set of ops per call, not one per caption length)."""
    lens = torch.as_tensor(cap_lens, device=words_emb.device).reshape(-1)
    valid = torch.arange(words_emb.size(2), device=words_emb.device).unsqueeze(0) < lens.unsqueeze(1)  # B x T
    wei_context, _ = func_attention(words_emb, img_features, gamma1, valid)  # B x D x T
    cos = cosine_similarity(wei_context, words_emb, dim=1, eps=eps)  # B x T
    return torch.logsumexp((cos * gamma2).masked_fill(~valid, float("-inf")), dim=1)  # Eq. (10)


def damsm_generator_loss(image_encoder, fake, words_emb, sent_emb, batch, cfg, features=None, negatives=None):
    """LAMBDA·(words_loss0 + words_loss1) + LAMBDA·(sent_loss0 + sent_loss1) of generated images (AttnGAN Eq. 7).
    `features`: `image_encoder(fake)` when the caller already has it.

    Ours, with TRAIN.SMOOTH.SWAP_LAMBDA > 0 and `negatives` = (words_emb, sent_emb, has) of the captions with one
    DAMSM.SWAP_NEGATIVES word swapped (trainers.common.encode_swap_negatives): each image must also match its own
    caption better than that hard negative, -log softmax(GAMMA3 · [score(image, caption), score(image, negative)])
    at the word level (added to the first value) and the sentence level (to the second), over the captions that
    have a negative. The batch's other captions rarely differ from an image's in one word, so the plain DAMSM term
    leaves such differences (a circle for a square) unasked."""
    sm = cfg.TRAIN.SMOOTH
    region_features, cnn_code = image_encoder(fake) if features is None else features
    region_features, cnn_code = region_features.float(), cnn_code.float()
    b = fake.size(0)
    labels = torch.arange(b, device=fake.device)
    w0, w1, _ = words_loss(region_features, words_emb, labels, batch.cap_lens, batch.class_ids, b,
                           sm.GAMMA1, sm.GAMMA2, sm.GAMMA3)
    s0, s1 = sent_loss(cnn_code, sent_emb, labels, batch.class_ids, b, sm.GAMMA3)
    w, s = (w0 + w1) * sm.LAMBDA, (s0 + s1) * sm.LAMBDA
    if negatives is None or not sm.SWAP_LAMBDA or not negatives[2].any():
        return w, s
    neg_words, neg_sent, has = negatives
    pos_w = paired_words_similarity(region_features, words_emb, batch.cap_lens, sm.GAMMA1, sm.GAMMA2)
    neg_w = paired_words_similarity(region_features, neg_words.float(), batch.cap_lens, sm.GAMMA1, sm.GAMMA2)
    pos_s, neg_s = cosine_similarity(cnn_code, sent_emb), cosine_similarity(cnn_code, neg_sent.float())
    w = w + sm.SWAP_LAMBDA * F.softplus(sm.GAMMA3 * (neg_w - pos_w))[has].mean()
    s = s + sm.SWAP_LAMBDA * F.softplus(sm.GAMMA3 * (neg_s - pos_s))[has].mean()
    return w, s


def perceptual_loss(image_encoder, fake_features: torch.Tensor, real: torch.Tensor,
                    real_features: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared distance between the DAMSM image encoder's region features of generated images
    (`fake_features`, computed with gradients) and those of the real images of their captions (`real`).

    ControlGAN's perceptual loss (Li et al. 2019, Eq. 5) with the DAMSM image encoder in place of ImageNet VGG-16
    (whose weights cannot be downloaded here, and which knows nothing of a synthetic dataset): it asks each image to
    show what its caption's real image shows, where it shows it, and leaves the pixels to the adversarial loss.
    `real_features`, where given, are those of `real` computed before (`trainers.common.RealFeatureCache`).
    """
    if real_features is None:
        with torch.no_grad():
            real_features = image_encoder(real)[0]
    return F.mse_loss(fake_features.float(), real_features.float())


def pooled(images: torch.Tensor, cells: int) -> torch.Tensor:
    """`images` average-pooled to `cells` x `cells` (TRAIN.ANCHOR_POOL); unchanged for `cells` <= 0."""
    return images if cells <= 0 else F.adaptive_avg_pool2d(images, cells)


def pixel_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel distance between generated images and the real images of their captions (pix2pix's
    paired reconstruction term, squared rather than absolute).

    Squared, because where a caption leaves things open (background, size) its optimum is the mean of the images
    the caption fits, which still shows each object's colour, place and outline; the absolute distance's optimum is
    their per-pixel median, which for a small object in an open background is the background (measured on
    `shapes`: it erased the objects). An adversarial loss, where one trains, sharpens the rest.
    """
    return F.mse_loss(fake.float(), real.float())


# the RGB directions `colour_distribution_loss` projects on: the three channels and the cube's four diagonals
COLOUR_DIRECTIONS = F.normalize(torch.tensor([[1., 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, 1, -1], [1, -1, 1],
                                              [-1, 1, 1]]), dim=1)


def colour_distribution_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """How far each image's colours are from its real image's, wherever they are: every pixel's colour projected on
    `COLOUR_DIRECTIONS`, each projection's values sorted over the pixels, the mean squared distance of the sorted
    values (a sliced 1-D Wasserstein distance between the two pixel colour distributions, fixed directions).

    Ours, for the anchor term (TRAIN.ANCHOR_COLOURS): a caption fixes its objects' colours and sizes and the
    background, not always their places. Moving an object costs nothing here; leaving it out costs its pixels.
    """
    if fake.shape != real.shape or fake.dim() != 4 or fake.size(1) != 3:
        raise InputError(f"colour_distribution_loss needs two [B, 3, H, W] batches of one shape, got "
                         f"{tuple(fake.shape)} and {tuple(real.shape)}")
    directions = COLOUR_DIRECTIONS.to(fake.device)
    fake_p, real_p = (torch.einsum("bchw,dc->bdhw", x.float(), directions).flatten(2).sort(dim=2).values
                      for x in (fake, real))
    return F.mse_loss(fake_p, real_p)
