"""DAMSM encoders: official state-dict layouts, forward contracts, BERT padding invariance, factories, loaders."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from miscc.config import load_config
from miscc.losses import sent_loss, words_loss
from models.damsm import (BERT_ENCODER, CNN_ENCODER, INCEPTION_TRUNK, RNN_ENCODER, SMALL_CNN_ENCODER,
                          build_image_encoder, build_text_encoder, load_image_encoder, load_text_encoder)


def official_rnn_shapes(n_words):
    """The 9 keys of AttnGAN's text_encoder200.pth (birds) / text_encoder100.pth (COCO)."""
    shapes = {"encoder.weight": (n_words, 300)}
    for suffix in ("", "_reverse"):
        shapes[f"rnn.weight_ih_l0{suffix}"] = (512, 300)
        shapes[f"rnn.weight_hh_l0{suffix}"] = (512, 128)
        shapes[f"rnn.bias_ih_l0{suffix}"] = (512,)
        shapes[f"rnn.bias_hh_l0{suffix}"] = (512,)
    return shapes


def padded_batch(lens, n_words=50, steps=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    steps = steps or max(lens)
    caps = torch.randint(1, n_words, (len(lens), steps), generator=g)
    for i, n in enumerate(lens):
        caps[i, n:] = 0
    return caps, torch.tensor(lens)


# ------------------------------------------------------------------ RNN_ENCODER
@pytest.mark.parametrize("n_words", [5450, 27297])
def test_rnn_official_layout_loads_strictly(tmp_path, n_words):
    model = RNN_ENCODER(n_words, nhidden=256)
    shapes = official_rnn_shapes(n_words)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    g = torch.Generator().manual_seed(n_words)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    path = tmp_path / "text_encoder200.pth"
    torch.save(state, path)
    assert load_text_encoder(model, str(path)) is model
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_rnn_vocabulary_mismatch_message(tmp_path):
    path = tmp_path / "text_encoder200.pth"
    torch.save(RNN_ENCODER(5450).state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_text_encoder(RNN_ENCODER(27297), str(path))
    msg = str(err.value)
    assert str(path) in msg and "5,450" in msg and "27,297" in msg and "captions.pickle" in msg
    assert "vocabulary" in msg


def test_rnn_shapes_padding_and_init():
    model = RNN_ENCODER(50, nhidden=32).eval()
    assert model.encoder.weight.abs().max() <= 0.1  # uniform(-0.1, 0.1)
    caps, lens = padded_batch([6, 4, 2], steps=9)  # T = 9 > longest caption
    words, sent = model(caps, lens)
    assert words.shape == (3, 32, 9) and sent.shape == (3, 32)
    for i, n in enumerate(lens):
        assert torch.all(words[i, :, n:] == 0) and torch.all(words[i, :, :n].abs().sum(0) > 0)
    w2, s2 = model(caps, lens, model.init_hidden(3))  # zero state = None
    assert torch.allclose(words, w2) and torch.allclose(sent, s2)


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_rnn_outputs_equal_a_plain_rnn_run_per_caption(rnn_type):
    """Packed-batch words/sentence = the RNN run alone on each unpadded caption; sentence = [h_fwd_last, h_bwd_last]."""
    torch.manual_seed(0)
    model = RNN_ENCODER(40, ninput=20, nhidden=24, rnn_type=rnn_type).eval()
    assert isinstance(model.rnn, nn.LSTM if rnn_type == "LSTM" else nn.GRU)
    caps, lens = padded_batch([7, 5, 5, 1], n_words=40)
    words, sent = model(caps, lens)
    with torch.no_grad():
        for i, n in enumerate(lens.tolist()):
            out, h = model.rnn(model.encoder(caps[i:i + 1, :n]))
            h_n = h[0] if rnn_type == "LSTM" else h
            assert torch.allclose(sent[i], torch.cat([h_n[0, 0], h_n[1, 0]]), atol=1e-6)
            assert torch.allclose(sent[i, :12], out[0, -1, :12], atol=1e-6)  # forward direction: last step
            assert torch.allclose(sent[i, 12:], out[0, 0, 12:], atol=1e-6)  # backward direction: first step
            assert torch.allclose(words[i, :, :n], out[0].t(), atol=1e-6)
    # an unsorted batch gives each caption the same features
    perm = torch.tensor([2, 0, 3, 1])
    w_p, s_p = model(caps[perm], lens[perm])
    assert torch.allclose(w_p, words[perm], atol=1e-6) and torch.allclose(s_p, sent[perm], atol=1e-6)


def test_rnn_dropout_and_bad_lengths():
    model = RNN_ENCODER(50, nhidden=16).train()
    caps, lens = padded_batch([5, 3])
    torch.manual_seed(1)
    a = model(caps, lens)[1]
    b = model(caps, lens)[1]
    assert not torch.allclose(a, b)  # embedding dropout 0.5 is active in training
    with pytest.raises(ValueError, match="caption lengths"):
        model(caps, torch.tensor([5, 0]))
    with pytest.raises(ValueError, match="caption lengths"):
        model(caps, torch.tensor([6, 3]))
    with pytest.raises(ValueError, match="rnn_type"):
        RNN_ENCODER(50, rnn_type="RNN")


# ------------------------------------------------------------------ CNN_ENCODER (Inception)
@pytest.fixture(scope="module")
def inception():
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = CNN_ENCODER(256)
    return model


def test_inception_official_layout(inception):
    state = inception.state_dict()
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    assert len(keys) == 473
    assert tuple(state["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(state["Mixed_6e.branch_pool.bn.running_var"].shape) == (192,)
    assert tuple(state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape) == (384, 384, 3, 1)
    assert tuple(state["emb_features.weight"].shape) == (256, 768, 1, 1)
    assert tuple(state["emb_cnn_code.weight"].shape) == (256, 2048)
    assert "emb_features.bias" not in state
    assert not any(k.startswith(("AuxLogits", "fc.")) for k in state)
    assert {k.split(".")[0] for k in keys} == set(INCEPTION_TRUNK) | {"emb_features", "emb_cnn_code"}
    trainable = [n for n, p in inception.named_parameters() if p.requires_grad]
    assert sorted(trainable) == ["emb_cnn_code.bias", "emb_cnn_code.weight", "emb_features.weight"]
    assert sum(p.numel() for p in inception.parameters() if p.requires_grad) == 721152


def test_inception_loads_official_dict_without_num_batches_tracked(inception, tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in inception.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5  # drifted BN statistics must come from the file
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    path = tmp_path / "image_encoder200.pth"
    torch.save(state, path)
    load_image_encoder(inception, str(path))
    loaded = inception.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())

    torch.save({k: state[k] for k in ("Mixed_5b.branch1x1.conv.weight", "emb_features.weight")}, path)
    with pytest.raises(RuntimeError, match="image_encoder200.pth"):
        load_image_encoder(inception, str(path))
    torch.save(SMALL_CNN_ENCODER(256).state_dict(), path)
    with pytest.raises(ValueError, match="DAMSM.IMAGE_ENCODER"):
        load_image_encoder(inception, str(path))


def test_inception_forward_resizes_with_align_corners_true(inception):
    seen = {}
    hook = inception.Conv2d_1a_3x3.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    x = torch.rand(1, 3, 64, 48) * 2 - 1
    inception.eval()
    try:
        with torch.no_grad():
            features, code = inception(x)
    finally:
        hook.remove()
    assert features.shape == (1, 256, 17, 17) and code.shape == (1, 256)
    assert torch.isfinite(features).all() and torch.isfinite(code).all()
    assert torch.equal(seen["x"], F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True))
    assert (seen["x"] - F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)).abs().max() > 1e-3


def test_inception_imagenet_weights_file(inception, tmp_path):
    missing = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    with pytest.raises(FileNotFoundError, match="inception_v3_google-0cc3c7bd.pth"):
        CNN_ENCODER(256, inception_weights=str(missing))
    # torchvision's file: trunk + AuxLogits + fc, saved by torch 0.3 (no num_batches_tracked)
    g = torch.Generator().manual_seed(1)
    google = {k: (torch.rand(v.shape, generator=g) + 0.5) if k.endswith("running_var")
              else torch.randn(v.shape, generator=g) * 0.05
              for k, v in inception.state_dict().items()
              if k.split(".")[0] in INCEPTION_TRUNK and not k.endswith("num_batches_tracked")}
    google.update({"AuxLogits.fc.weight": torch.zeros(1000, 768), "AuxLogits.fc.bias": torch.zeros(1000),
                   "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    path = tmp_path / "inception_v3_google-test.pth"
    torch.save(google, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-init warning when weights are given
        model = CNN_ENCODER(64, inception_weights=str(path), freeze_bn=True)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in google.items() if k in state)
    assert state["emb_features.weight"].shape == (64, 768, 1, 1)
    model.train()
    assert not model.Mixed_6e.training and model.emb_features.training  # freeze_bn keeps the trunk in eval


# ------------------------------------------------------------------ SMALL_CNN_ENCODER
def test_small_encoder_contract_and_batch_independence():
    torch.manual_seed(0)
    model = SMALL_CNN_ENCODER(nef=48, image_size=64).train()
    x = F.interpolate(torch.rand(3, 3, 6, 6) * 2 - 1, size=(64, 64), mode="bilinear", align_corners=False)
    features, code = model(x)
    assert features.shape == (3, 48, 8, 8) and code.shape == (3, 48)
    assert all(p.requires_grad for p in model.parameters())
    f1, c1 = model(x[:1])
    assert torch.allclose(f1, features[:1], atol=1e-5) and torch.allclose(c1, code[:1], atol=1e-5)
    big = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
    f_big, c_big = model(big)  # any input size is brought to image_size first
    assert f_big.shape == (3, 48, 8, 8) and (c_big - code).abs().mean() < 0.1 * code.abs().mean()
    with pytest.raises(ValueError, match="image_size=48"):
        SMALL_CNN_ENCODER(image_size=48)


def test_small_encoder_learns_to_match_images_and_sentences():
    """DAMSM losses on 8 synthetic images (one coloured square, different colour/position) and 8 fixed random
    'sentences': a few dozen Adam steps must make every image retrieve its own sentence."""
    torch.manual_seed(0)
    colours = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]], dtype=torch.float32)
    images = -torch.ones(8, 3, 16, 16)
    for i in range(8):
        y, x = (2, 9)[i // 4], (1, 5, 9, 12)[i % 4]
        images[i, :, y:y + 4, x:x + 4] = colours[i % 4].view(3, 1, 1)
    sentences = torch.randn(8, 32)
    words = torch.randn(8, 32, 3)
    model = SMALL_CNN_ENCODER(nef=32, image_size=16, ndf=8, region_size=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    labels = torch.arange(8)
    for _ in range(40):
        features, code = model(images)
        s0, s1 = sent_loss(code, sentences, labels, None, 8)
        w0, w1, _ = words_loss(features, words, labels, torch.full((8,), 3), None, 8)
        opt.zero_grad()
        (s0 + s1 + w0 + w1).backward()
        opt.step()
    with torch.no_grad():
        _, code = model(images)
    sims = F.normalize(code, dim=1) @ F.normalize(sentences, dim=1).t()
    assert torch.equal(sims.argmax(1), labels)


# ------------------------------------------------------------------ BERT_ENCODER
CAPTIONS = ["a small red circle in the top left corner",
            "there is a large blue square on the right and a little yellow triangle at the bottom",
            "green triangle"]


@pytest.fixture(scope="module")
def bert_plain(minilm_dir):
    return BERT_ENCODER(minilm_dir, embedding_dim=None, sentence="cls", projection=False)


@pytest.fixture(scope="module")
def bert_proj(minilm_dir):
    torch.manual_seed(0)
    return BERT_ENCODER(minilm_dir, embedding_dim=32, sentence="mean", projection=True)


def test_bert_encode_text(bert_plain):
    tok = bert_plain.tokenizer
    ids, lens = bert_plain.encode_text(CAPTIONS, max_len=12)
    assert ids.shape == (3, 12) and ids.dtype == torch.long
    expected = [tok(c, add_special_tokens=False)["input_ids"][:12] for c in CAPTIONS]
    assert lens.tolist() == [len(e) for e in expected] == [9, 12, 2]
    for row, e in zip(ids, expected):
        assert row[:len(e)].tolist() == e and torch.all(row[len(e):] == 0)
    assert tok.cls_token_id not in ids and tok.sep_token_id not in ids
    ids2, lens2 = bert_plain.encode_text(CAPTIONS)
    assert ids2.shape == (3, 17) and lens2.tolist() == [9, 17, 2]
    with pytest.raises(ValueError, match="caption 1"):
        bert_plain.encode_text(["a dog", "  "])


def test_bert_features_are_the_transformer_states(bert_plain):
    ids, lens = bert_plain.encode_text(CAPTIONS)
    words, sent = bert_plain(ids, lens)
    assert words.shape == (3, 384, 17) and sent.shape == (3, 384)
    with torch.no_grad():
        for i, n in enumerate(lens.tolist()):
            single = torch.tensor([[bert_plain.tokenizer.cls_token_id] + ids[i, :n].tolist()
                                   + [bert_plain.tokenizer.sep_token_id]])
            states = bert_plain.embedder(input_ids=single).last_hidden_state[0]
            assert torch.allclose(words[i, :, :n].t(), states[1:n + 1], atol=1e-5)
            assert torch.all(words[i, :, n:] == 0)
            assert torch.allclose(sent[i], states[0], atol=1e-5)


def test_bert_padding_does_not_change_features(bert_proj):
    ids, lens = bert_proj.encode_text(CAPTIONS)
    words, sent = bert_proj(ids, lens)
    assert words.shape == (3, 32, 17) and sent.shape == (3, 32)
    longer = torch.cat([ids, torch.zeros(3, 7, dtype=torch.long)], 1)
    w_long, s_long = bert_proj(longer, lens)
    assert w_long.shape == (3, 32, 24)
    assert torch.allclose(w_long[:, :, :17], words, atol=1e-5) and torch.all(w_long[:, :, 17:] == 0)
    assert torch.allclose(s_long, sent, atol=1e-5)
    for i, n in enumerate(lens.tolist()):  # alone and unpadded
        w1, s1 = bert_proj(ids[i:i + 1, :n], lens[i:i + 1])
        assert torch.allclose(w1[0], words[i, :, :n], atol=1e-5) and torch.allclose(s1[0], sent[i], atol=1e-5)
        assert torch.all(words[i, :, n:] == 0)


def test_bert_pad_id_other_than_zero_is_mapped(bert_proj, monkeypatch):
    ids, lens = bert_proj.encode_text(CAPTIONS)
    words, sent = bert_proj(ids, lens)
    monkeypatch.setattr(bert_proj, "pad_id", 7)
    input_ids, attention = bert_proj.build_inputs(ids, lens)
    assert input_ids.shape == (3, 19)
    for i, n in enumerate(lens.tolist()):
        assert input_ids[i, 0] == bert_proj.cls_id and input_ids[i, n + 1] == bert_proj.sep_id
        assert input_ids[i, 1:n + 1].tolist() == ids[i, :n].tolist()
        assert torch.all(input_ids[i, n + 2:] == 7)
        assert attention[i].tolist() == [1] * (n + 2) + [0] * (17 - n)
    w7, s7 = bert_proj(ids, lens)  # masked padding: its id does not matter
    assert torch.allclose(w7, words, atol=1e-5) and torch.allclose(s7, sent, atol=1e-5)
    # with pad id 7 the datasets store text id 0 as 7 (datasets.swap_pad_id): the model gets the 0 back
    stored = ids.clone()
    stored[0, 1] = 7
    input_ids, _ = bert_proj.build_inputs(stored, lens)
    assert input_ids[0, 2] == 0 and input_ids[0, lens[0] + 2] == 7


def test_bert_frozen_unless_finetune(bert_proj):
    assert not any(p.requires_grad for p in bert_proj.embedder.parameters())
    bert_proj.train()
    assert not bert_proj.embedder.training and bert_proj.word_proj.training
    ids, lens = bert_proj.encode_text(CAPTIONS[:2])
    words, sent = bert_proj(ids, lens)
    (words.sum() + sent.sum()).backward()
    assert bert_proj.word_proj.weight.grad is not None and bert_proj.sent_proj.weight.grad is not None
    bert_proj.eval()
    bert_proj.zero_grad()


def test_bert_pooler_sentence(minilm_dir, bert_plain):
    enc = BERT_ENCODER(minilm_dir, embedding_dim=384, sentence="pooler", projection=False)
    ids, lens = enc.encode_text(CAPTIONS)
    _, sent = enc(ids, lens)
    input_ids, attention = enc.build_inputs(ids, lens)
    with torch.no_grad():
        expected = enc.embedder(input_ids=input_ids, attention_mask=attention).pooler_output
    assert torch.allclose(sent, expected, atol=1e-6)
    assert not torch.allclose(sent, bert_plain(ids, lens)[1], atol=1e-3)  # differs from [CLS]


def test_bert_path_errors(tmp_path, minilm_dir):
    missing = tmp_path / "no_such_bert"
    with pytest.raises(FileNotFoundError, match="no_such_bert"):
        BERT_ENCODER(missing)
    with pytest.raises(FileNotFoundError, match="config.json"):
        BERT_ENCODER(tmp_path)
    with pytest.raises(ValueError, match="384"):
        BERT_ENCODER(minilm_dir, embedding_dim=256, projection=False)
    with pytest.raises(ValueError, match="sentence"):
        BERT_ENCODER(minilm_dir, sentence="max")


def test_bert_checkpoint_round_trip(bert_proj, minilm_dir, tmp_path):
    state = {k: v.clone() for k, v in bert_proj.state_dict().items()}
    assert any(k.startswith("embedder.") for k in state)  # BERT-AttnGAN's key prefix
    state["embedder.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)  # transformers 3.1-4.30 files
    path = tmp_path / "text_encoder5.pth"
    torch.save(state, path)
    other = BERT_ENCODER(minilm_dir, embedding_dim=32, sentence="mean")
    load_text_encoder(other, str(path))
    assert torch.equal(other.word_proj.weight, bert_proj.word_proj.weight)


# ------------------------------------------------------------------ factories
def test_build_text_encoder(minilm_dir):
    cfg = load_config(overrides={"TEXT.EMBEDDING_DIM": 64, "RNN_TYPE": "GRU"})
    enc = build_text_encoder(cfg, 123)
    assert isinstance(enc, RNN_ENCODER) and isinstance(enc.rnn, nn.GRU)
    assert enc.encoder.weight.shape == (123, 300) and enc.rnn.hidden_size == 32
    cfg = load_config(overrides={"TEXT.ENCODER": "bert", "TEXT.BERT_PATH": str(minilm_dir),
                                 "TEXT.EMBEDDING_DIM": 16, "TEXT.BERT_SENTENCE": "mean"})
    enc = build_text_encoder(cfg, 0)
    assert isinstance(enc, BERT_ENCODER) and enc.embedding_dim == 16 and enc.sentence == "mean"
    with pytest.raises(ValueError, match="TEXT.BERT_PATH"):
        build_text_encoder(load_config(overrides={"TEXT.ENCODER": "bert"}), 0)
    with pytest.raises(ValueError, match="TEXT.ENCODER"):
        build_text_encoder(load_config(overrides={"TEXT.ENCODER": "lstm"}), 10)


def test_build_image_encoder(tmp_path):
    cfg = load_config(overrides={"DAMSM.IMAGE_ENCODER": "small", "TEXT.EMBEDDING_DIM": 40})
    enc = build_image_encoder(cfg)
    assert isinstance(enc, SMALL_CNN_ENCODER) and enc.emb_cnn_code.out_features == 40 and enc.image_size == 64
    big = build_image_encoder(load_config(overrides={"DAMSM.IMAGE_ENCODER": "small", "DAMSM.IMAGE_SIZE": 128}))
    assert big(torch.zeros(1, 3, 64, 64))[0].shape == (1, 256, 8, 8) and big.image_size == 128
    missing = str(tmp_path / "inception_v3_google-1a9a5a14.pth")
    with pytest.raises(FileNotFoundError, match="inception_v3_google-1a9a5a14.pth"):
        build_image_encoder(load_config(overrides={"DAMSM.INCEPTION_WEIGHTS": missing}))
    with pytest.raises(ValueError, match="DAMSM.IMAGE_ENCODER"):
        build_image_encoder(load_config(overrides={"DAMSM.IMAGE_ENCODER": "resnet"}))
    path = tmp_path / "image_encoder3.pth"
    torch.save(enc.state_dict(), path)
    other = load_image_encoder(build_image_encoder(cfg), str(path))
    assert torch.equal(other.emb_cnn_code.weight, enc.emb_cnn_code.weight)
    with pytest.raises(FileNotFoundError, match="image_encoder9.pth"):
        load_image_encoder(other, str(tmp_path / "image_encoder9.pth"))
