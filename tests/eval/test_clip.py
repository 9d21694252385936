"""CLIP score maths, and loading a (tiny, random) CLIP folder offline through transformers."""
import pytest
import torch
import torch.nn.functional as F

from eval.clip_score import LocalCLIP, clip_score, clip_scores
from eval.protocols import EvalContext, SampleBatch, run_protocols
from eval.rprecision import r_precision_from_pool


def test_clip_score_scale_and_per_sample_clamp():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    txt = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 5.0]])
    per = clip_scores(img, txt)
    assert torch.allclose(per, torch.tensor([100 / 2 ** 0.5, 0.0, 100.0]))  # 100 * max(cos, 0)
    mean, std = clip_score(img, txt)
    assert mean == pytest.approx((100 / 2 ** 0.5 + 100) / 3)
    # torchmetrics clamps the mean instead: max(mean(100 cos), 0), lower here because of the negative pair
    torchmetrics_style = max(float((100 * F.cosine_similarity(img, txt)).mean()), 0.0)
    assert torchmetrics_style < mean
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        clip_scores(img, txt[:2])


def test_missing_clip_folder_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        LocalCLIP(str(tmp_path / "no_clip"))
    with pytest.raises(FileNotFoundError, match="none given"):
        LocalCLIP(None)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=CLIPTokenizer(vocab=vocab, merges=[]))
    processor.save_pretrained(folder)
    return str(folder)


def test_local_clip_encodes_and_scores(tiny_clip_dir):
    clip = LocalCLIP(tiny_clip_dir, device="cpu", batch_size=3)
    images = torch.rand(5, 3, 48, 40) * 2 - 1
    captions = ["a red circle", "a blue square at the top", "green", "a purple triangle on the left", "x" * 200]
    img, txt = clip.encode_images(images), clip.encode_texts(captions)
    assert img.shape == (5, 16) and txt.shape == (5, 16)
    # batching does not change the embeddings, and [-1, 1] floats are read like the equivalent uint8 images
    assert torch.allclose(clip.encode_images(images[:1]), img[:1], atol=1e-5)
    u8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert torch.allclose(clip.encode_images(u8), img, atol=1e-6)
    assert len(clip.weights_sha256) == 64

    def sample(n, batch_size):
        for s in range(0, n, batch_size):
            yield SampleBatch(images[s:s + batch_size], captions[s:s + batch_size], None, {})

    def ten(n, batch_size):  # cliprprec needs N >= its 10 folds
        yield SampleBatch(torch.cat([images, images]), captions + [c + " again" for c in captions])

    results = run_protocols(["clip5"], sample, EvalContext(clip=clip, device="cpu", batch_size=2))
    assert (results[0]["value"], results[0]["std"]) == pytest.approx(clip_score(img, txt))
    assert results[0]["feature_extractor"] == "clip" and results[0]["feature_extractor_weights"] == tiny_clip_dir
    rp = run_protocols(["cliprprec10"], ten, EvalContext(clip=clip, device="cpu"))[0]
    all_captions = captions + [c + " again" for c in captions]
    expected = r_precision_from_pool(clip.encode_images(torch.cat([images, images])), clip.encode_texts(all_captions),
                                     all_captions, 99, None, 10, 0)
    assert (rp["value"], rp["std"]) == pytest.approx(expected)
