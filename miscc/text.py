"""AttnGAN caption tokenisation and vocabulary (A/code/datasets.py `load_captions`, `build_dictionary`).

Tokens: lowercase, `RegexpTokenizer(r'\\w+')`, non-ASCII characters dropped from inside tokens ("café" → "caf", as
the original does), empty tokens and captions dropped. Mapped through the official `wordtoix`, this reproduces the
released birds `captions.pickle` exactly.
"""
from __future__ import annotations

import os
import warnings

import regex

from miscc.errors import InputError

# nltk's `RegexpTokenizer(r"\w+").tokenize` is this findall of the `regex` module (whose \w, unlike re's, keeps
# combining marks inside a word) with nltk's default flags; importing nltk itself takes seconds.
_WORDS = regex.compile(r"\w+", regex.UNICODE | regex.MULTILINE | regex.DOTALL)
END_TOKEN = "<end>"  # index 0: padding and end of caption


def tokenize_caption(line: str) -> list[str]:
    """Tokens of one caption line, by AttnGAN's rules."""
    line = line.replace("\ufffd\ufffd", " ")
    tokens = (t.encode("ascii", "ignore").decode("ascii") for t in _WORDS.findall(line.lower()))
    return [t for t in tokens if t]


_WARNED_ENCODING: set[str] = set()  # files already reported for invalid UTF-8 in this process


def read_text_lines(path: str, strict: bool = False) -> list[str]:
    """The lines of a UTF-8 text file (captions, example sentences).

    Invalid UTF-8 is decoded with replacement characters (as the originals did) and reported by one warning per
    file naming it, the first bad line and how many lines are affected; with `strict` (DATA.STRICT_TEXT,
    `tools.import_folder --strict_text`) it is an `InputError` instead.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        start = e.start
    first = data[:start].count(b"\n") + 1
    bad = sum(1 for line in data.split(b"\n") if _invalid_utf8(line))
    what = f"{path}, line {first}: invalid UTF-8 (byte 0x{data[start]:02x}; {bad} line{'s' * (bad != 1)} affected)"
    if strict:
        raise InputError(f"{what}; save the file as UTF-8, or allow replacement characters (DATA.STRICT_TEXT False)")
    key = os.path.abspath(path)
    if key not in _WARNED_ENCODING:
        _WARNED_ENCODING.add(key)
        warnings.warn(f"{what}: decoded with replacement characters")
    return data.decode("utf-8", errors="replace").split("\n")


def _invalid_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def cut_sentence(sentence: str, words_num: int, source: str = "sentence") -> str:
    """`sentence` cut after its `words_num`-th word (words as `tokenize_caption` counts them), with a warning naming
    `source` and how many words were dropped; shorter sentences (or `words_num` < 1) are returned unchanged.

    For sentences a user types (`tools.generate`, the web page) and caption files being imported; training captions
    keep AttnGAN's random ordered subset of TEXT.WORDS_NUM words instead (`TextDataset`).
    """
    ends = [m.end() for m in _WORDS.finditer(sentence) if m.group().encode("ascii", "ignore")]
    if words_num < 1 or len(ends) <= words_num:
        return sentence
    warnings.warn(f"{source}: {len(ends)} words, more than TEXT.WORDS_NUM={words_num}; cut to the first {words_num} "
                  f"({len(ends) - words_num} words dropped)")
    return sentence[:ends[words_num - 1]]


def read_caption_file(path: str, captions_per_image: int, warn: bool = True, strict: bool = False) -> list[list[str]]:
    """The first `captions_per_image` non-empty tokenised lines of a caption file; warns (naming it) if fewer.
    Invalid UTF-8: see `read_text_lines`."""
    lines = read_text_lines(path, strict)
    captions = []
    for line in lines:
        tokens = tokenize_caption(line)
        if tokens:
            captions.append(tokens)
            if len(captions) == captions_per_image:
                break
    if warn and len(captions) < captions_per_image:
        warnings.warn(f"{path}: {len(captions)} captions, fewer than CAPTIONS_PER_IMAGE={captions_per_image}")
    return captions


def build_vocabulary(token_lists) -> tuple[dict[int, str], dict[str, int]]:
    """`(ixtoword, wordtoix)` with 0 = '<end>' and the other words in first-appearance order.

    The original iterated a Python-2 dict, so its order cannot be reproduced; released encoders need the released
    `captions.pickle`, never a rebuilt one.
    """
    ixtoword = {0: END_TOKEN}
    wordtoix = {END_TOKEN: 0}
    for tokens in token_lists:
        for w in tokens:
            if w not in wordtoix:
                wordtoix[w] = len(ixtoword)
                ixtoword[len(ixtoword)] = w
    return ixtoword, wordtoix


def encode_tokens(tokens: list[str], wordtoix: dict[str, int]) -> list[int]:
    """Word ids of the in-vocabulary tokens (AttnGAN drops unknown words)."""
    return [wordtoix[w] for w in tokens if w in wordtoix]


def swap_pad_id(ids, pad_token_id: int | None):
    """Exchange ids 0 and `pad_token_id` (an involution: the same call converts both ways).

    Our captions pad with 0. For a tokenizer whose pad id is p != 0, id 0 is an ordinary token, so the dataset
    stores it as p (which never occurs in text tokenised without special tokens) and padding as 0; an encoder that
    feeds ids back to such a tokenizer's model calls this again. BERT-family tokenizers (pad id 0) are unaffected.
    """
    if not pad_token_id:
        return ids
    if hasattr(ids, "clone"):  # a torch.Tensor
        out = ids.clone()
        out[ids == 0] = pad_token_id
        out[ids == pad_token_id] = 0
        return out
    return [pad_token_id if i == 0 else 0 if i == pad_token_id else i for i in ids]
