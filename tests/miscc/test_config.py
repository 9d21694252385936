"""Config merge: the original YAML files load unchanged; unknown keys and wrong types fail with the key named."""
import pathlib

import pytest

from miscc.config import ConfigError, data_layout, image_encoder_path, load_config, parse_overrides, resolve_path

CFG = pathlib.Path(__file__).resolve().parents[2] / "cfg"


@pytest.mark.parametrize("name, batch, words, lam", [
    ("bird_attn2.yml", 20, 18, 5.0),
    ("coco_attn2.yml", 14, 12, 50.0),
    ("eval_bird.yml", 100, 25, 1.0),
    ("eval_coco.yml", 100, 20, 1.0),
    ("DAMSM/bird.yml", 48, 18, 1.0),
    ("DAMSM/coco.yml", 48, 15, 1.0),
])
def test_original_attngan_files_load(name, batch, words, lam):
    cfg = load_config(CFG / name)
    assert cfg.TRAIN.BATCH_SIZE == batch
    assert cfg.TEXT.WORDS_NUM == words
    assert cfg.TRAIN.SMOOTH.LAMBDA == lam
    assert isinstance(cfg.TRAIN.SMOOTH.GAMMA1, float)


def test_original_values():
    bird = load_config(CFG / "bird_attn2.yml")
    assert (bird.GAN.GF_DIM, bird.GAN.DF_DIM, bird.GAN.R_NUM, bird.TREE.BRANCH_NUM) == (32, 64, 2, 3)
    assert bird.TRAIN.NET_E == "../DAMSMencoders/bird/text_encoder200.pth"
    assert image_encoder_path(bird.TRAIN.NET_E) == "../DAMSMencoders/bird/image_encoder200.pth"
    damsm = load_config(CFG / "DAMSM/bird.yml")
    assert (damsm.TREE.BRANCH_NUM, damsm.TREE.BASE_SIZE, damsm.TRAIN.ENCODER_LR) == (1, 299, 0.002)
    evalb = load_config(CFG / "eval_bird.yml")
    assert evalb.TRAIN.FLAG is False and evalb.TRAIN.B_NET_D is False


def test_wtliao_bird_loads():
    cfg = load_config(CFG / "bird.yml")
    assert cfg.loss == "hinge" and cfg.RESTORE is False and cfg.B_VALIDATION is True
    assert (cfg.TRAIN.NF, cfg.TRAIN.WARMUP_EPOCHS, cfg.TREE.BASE_SIZE) == (64, 100, 256)
    assert cfg.TEXT.DAMSM_NAME == "DAMSMencoders/bird/text_encoder200.pth"


def test_every_shipped_config_loads():
    files = sorted(CFG.rglob("*.yml"))
    assert len(files) >= 7
    for f in files:
        load_config(f)


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    f = tmp_path / "bad.yml"
    f.write_text("TRAIN:\n  BATCH_SIZ: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert str(f) in msg and "TRAIN.BATCH_SIZ" in msg and "TRAIN.BATCH_SIZE" in msg


def test_key_in_wrong_section_suggests_right_one(tmp_path):
    f = tmp_path / "bad.yml"
    f.write_text("TRAIN:\n  GF_DIM: 8\n")
    with pytest.raises(ConfigError, match="GAN.GF_DIM"):
        load_config(f)


@pytest.mark.parametrize("text, key", [
    ("TRAIN:\n  BATCH_SIZE: 8.5\n", "TRAIN.BATCH_SIZE"),
    ("TRAIN:\n  FLAG: 1\n", "TRAIN.FLAG"),
    ("GAN:\n  GF_DIM: '32'\n", "GAN.GF_DIM"),
    ("TRAIN:\n  SMOOTH:\n    LAMBDA: fast\n", "TRAIN.SMOOTH.LAMBDA"),
    ("TRAIN: 5\n", "TRAIN"),
    ("EVAL:\n  PROTOCOLS: fid30k\n", "EVAL.PROTOCOLS"),
])
def test_wrong_type_names_key(tmp_path, text, key):
    f = tmp_path / "bad.yml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(f)


def test_int_and_exponent_strings_accepted_for_floats(tmp_path):
    f = tmp_path / "ok.yml"
    f.write_text("TRAIN:\n  GENERATOR_LR: 2e-4\n  SMOOTH:\n    LAMBDA: 5\n")
    cfg = load_config(f)
    assert cfg.TRAIN.GENERATOR_LR == pytest.approx(2e-4) and cfg.TRAIN.SMOOTH.LAMBDA == 5.0
    assert isinstance(cfg.TRAIN.SMOOTH.LAMBDA, float)


def test_overrides_from_command_line():
    cfg = load_config(CFG / "bird_attn2.yml", parse_overrides(
        ["TRAIN.BATCH_SIZE=8", "GAN.GF_DIM=16", "TRAIN.AMP=bf16", "EVAL.PROTOCOLS=[fid1k, is1k]", "TRAIN.NET_G="]))
    assert (cfg.TRAIN.BATCH_SIZE, cfg.GAN.GF_DIM, cfg.TRAIN.AMP) == (8, 16, "bf16")
    assert cfg.EVAL.PROTOCOLS == ["fid1k", "is1k"] and cfg.TRAIN.NET_G == ""
    assert cfg.TRAIN.SMOOTH.LAMBDA == 5.0  # the file's value survives


def test_bad_overrides():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["TRAIN.BATCH_SIZE"])
    with pytest.raises(ConfigError, match="TRAIN.SMOOTH"):
        load_config(None, {"TRAIN.SMOOTH": 1.0})
    with pytest.raises(ConfigError, match="expects int"):
        load_config(None, {"TRAIN.BATCH_SIZE": "eight"})


def test_defaults_are_fresh_copies():
    a = load_config()
    a.TRAIN.SMOOTH.LAMBDA = 99.0
    assert load_config().TRAIN.SMOOTH.LAMBDA == 1.0


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yml")
    f = tmp_path / "broken.yml"
    f.write_text("TRAIN: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_layout_is_a_config_value():
    assert data_layout(load_config(CFG / "bird_attn2.yml")) == "cub"
    assert data_layout(load_config(CFG / "coco_attn2.yml")) == "coco"
    assert data_layout(load_config(None, {"DATASET_NAME": "cloth"})) == "custom"
    assert data_layout(load_config(None, {"DATASET_NAME": "birds", "DATA.LAYOUT": "custom"})) == "custom"
    with pytest.raises(ConfigError, match="DATA.LAYOUT"):
        data_layout(load_config(None, {"DATA.LAYOUT": "imagenet"}))


def test_resolve_path_maps_original_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = pathlib.Path(__file__).resolve().parents[2]
    assert resolve_path("../cfg/bird_attn2.yml") == str(root / "cfg/bird_attn2.yml")
    (tmp_path / "here.txt").write_text("x")
    assert resolve_path("here.txt") == "here.txt"
    assert resolve_path("../nowhere/x.pth") == "../nowhere/x.pth"


def test_every_config_key_has_a_resume_rule():
    """A new key must be classified (honoured / epoch boundary / refused / ignored) before a resume meets it."""
    from miscc.config import default_config, flat_config, resume_rule

    rules = {k: resume_rule(k) for k in flat_config(default_config())}
    assert rules["TRAIN.GENERATOR_LR"] == "honoured" and rules["TRAIN.SMOOTH.LAMBDA"] == "honoured"
    assert rules["GAN.GF_DIM"] == "refused" and rules["TEXT.ENCODER"] == "refused"
    assert rules["TRAIN.EMA"] == "refused" and rules["TRAIN.EMA_DECAY"] == "honoured"
    assert rules["TRAIN.BATCH_SIZE"] == "epoch_boundary" and rules["EVAL.SEED"] == "ignored"
    with pytest.raises(KeyError, match="'TRAIN.NEW_KEY' has no resume rule"):
        resume_rule("TRAIN.NEW_KEY")
