"""CLIP score and CLIP-R-precision from a LOCAL CLIP folder (transformers `CLIPModel` + `CLIPProcessor`).

The folder is what `CLIPModel.save_pretrained` and `CLIPProcessor.save_pretrained` write (config.json,
model.safetensors, tokenizer and preprocessor files), loaded with `local_files_only=True`: nothing is downloaded.

Scale: CLIP score = 100 * max(cos(image, text), 0) per sample, then averaged. torchmetrics' `CLIPScore` computes
100 * cos per sample and clamps the MEAN at 0 instead (identical unless some pairs have negative cosine); Hessel et
al.'s CLIPScore is 2.5 * max(cos, 0); GALIP's README number (0.3338) is the raw mean cosine. Captions longer than
CLIP's 77 tokens are truncated, as in torchmetrics. Images go through the processor's own resize/crop/normalise.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
import torch.nn.functional as F

from eval.images import to_uint8
from eval.inception import file_sha256
from miscc.errors import MissingFileError

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def clip_scores(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Per-pair CLIP score [N]: 100 * max(cosine, 0)."""
    image_emb, text_emb = torch.as_tensor(image_emb).float(), torch.as_tensor(text_emb).float()
    if image_emb.shape != text_emb.shape or image_emb.dim() != 2:
        raise ValueError(f"clip_scores: image and text embeddings must both be [N, D], got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    return 100.0 * F.cosine_similarity(image_emb, text_emb, dim=1).clamp(min=0)


def clip_score(image_emb, text_emb) -> tuple[float, float]:
    """(mean, population std) of the per-pair CLIP score."""
    s = clip_scores(image_emb, text_emb).double().numpy()
    return float(np.mean(s)), float(np.std(s))


class LocalCLIP:
    """CLIP image/text encoders from a local folder; `encode_images` takes uint8 or [-1, 1] float [B, 3, H, W]."""

    name = "clip"

    def __init__(self, model_dir: str | os.PathLike, device: str | torch.device | None = None,
                 batch_size: int = 64):
        model_dir = os.fspath(model_dir) if model_dir else ""
        if not model_dir or not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise MissingFileError(
                f"CLIP folder not found or incomplete: {model_dir or '(none given)'}. CLIP score needs a local folder "
                "written by transformers' CLIPModel.save_pretrained and CLIPProcessor.save_pretrained (config.json, "
                "model.safetensors, tokenizer and preprocessor files); set EVAL.CLIP_PATH or --clip to it")
        from transformers import CLIPModel, CLIPProcessor

        self.model_dir = model_dir
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(model_dir, local_files_only=True).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(model_dir, local_files_only=True)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        weights = [os.path.join(model_dir, f) for f in _WEIGHT_FILES if os.path.isfile(os.path.join(model_dir, f))]
        self.weights_sha256 = file_sha256(weights[0]) if weights else hashlib.sha256(model_dir.encode()).hexdigest()

    @staticmethod
    def _features(out) -> torch.Tensor:
        """transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor."""
        return (out.pooler_output if hasattr(out, "pooler_output") else out).float().cpu()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        for batch in to_uint8(images).split(self.batch_size):
            pixels = self.processor.image_processor(images=list(batch), return_tensors="pt")["pixel_values"]
            parts.append(self._features(self.model.get_image_features(pixel_values=pixels.to(self.device))))
        return torch.cat(parts)

    @torch.no_grad()
    def encode_texts(self, captions: list[str]) -> torch.Tensor:
        parts = []
        for start in range(0, len(captions), self.batch_size):
            tok = self.processor.tokenizer(list(captions[start:start + self.batch_size]), padding=True,
                                           truncation=True, max_length=self.max_length, return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items()}
            parts.append(self._features(self.model.get_text_features(**tok)))
        return torch.cat(parts)

    def describe(self) -> dict:
        return {"clip_model": self.model_dir, "clip_sha256": self.weights_sha256}
