"""Bad input through the command line, as a user meets it: every refusal ends in one `error:` line naming the file or
config key, exits non-zero and shows no traceback (unless --debug); text-input warnings name the file and line.

Every entry point runs once in a subprocess (`python main.py ...`, `python -m tools.generate ...`), the other cases
run the same `run_cli(main, argv)` in this process (an interpreter start costs seconds); all on a tiny shapes set."""
import importlib
import os
import pickle
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from miscc.checkpoint import describe_mismatch, load_checkpoint
from miscc.errors import format_error, run_cli
from miscc.text import cut_sentence, read_text_lines, tokenize_caption
from models.attngan import G_NET
from models.ssagan import NetG
from tests.helpers import small_config, tiny_encoders, tiny_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"GAN.GF_DIM": 4, "GAN.DF_DIM": 4, "TEXT.EMBEDDING_DIM": 32, "TRAIN.BATCH_SIZE": 4, "DAMSM.IMAGE_SIZE": 32,
        "WORKERS": 0, "DATA.CACHE_IMAGES": 0,
        "TRAIN.PERCEPTUAL_EXTRA": ""}  # the shipped config's second image encoder is 128-d
SENTENCE = "a red circle in the top left"
pytestmark = pytest.mark.usefixtures("one_thread")


class _Shell:  # pickled, it asks for os.system: a data loader must refuse it
    def __reduce__(self):
        return os.system, ("touch PWNED",)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The tiny data set, untrained encoders, and the generator files the cases load."""
    root = tmp_path_factory.mktemp("reliability")
    shapes = tiny_shapes(root / "data")
    cfg = small_config("cfg/shapes_attn.yml", shapes, **TINY)
    net_e = tiny_encoders(cfg, root / "damsm")
    torch.manual_seed(0)
    g = {}
    shapes_g = {"branch_num": 2, "r_num": 1, "base_size": 16, "grid_attention": 4, "word_context_layers": 1,
                "grid_noise": True, "grid_heads": 8, "grid_place": True}
    for name, net in {"netG_gf4.pth": G_NET(4, 32, 100, 100, **shapes_g),  # cfg/shapes_attn.yml at GF_DIM 4
                      "netG_gf8.pth": G_NET(8, 32, 100, 100, **shapes_g),
                      "netG_ssa.pth": NetG(ngf=4, nz=100, cond_dim=32, imsize=64)}.items():
        g[name] = str(root / name)
        torch.save(net.state_dict(), g[name])
    (root / "notes.txt").write_text("not a checkpoint\n")
    torch.save({"weights": _Shell()}, root / "unsafe.pth")
    return {"root": root, "shapes": shapes, "net_e": net_e, **g}


def attn_args(env, *sets, extra=()):
    return ["main.py", "--cfg", "cfg/shapes_attn.yml", "--gpu", "-1", *extra, "--set", f"DATA_DIR={env['shapes']}",
            f"TRAIN.NET_E={env['net_e']}", "TRAIN.MAX_STEPS=1", *[f"{k}={v}" for k, v in TINY.items()], *sets]


def run(args, env_vars=None):
    """`python <args>` in a subprocess from the project root."""
    environ = {k: v for k, v in os.environ.items() if k != "T2I_DEBUG"}
    environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env_vars or {})})
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=environ,
                          timeout=300)


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def run_here(args, capsys):
    """The same command through `run_cli(main, argv)` in this process (`main.py x` or `-m package.module x`)."""
    module = args[1] if args[0] == "-m" else os.path.splitext(args[0])[0]
    argv = args[2:] if args[0] == "-m" else args[1:]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # printed to stderr as an interpreter would
        warnings.simplefilter("always")
        status = run_cli(importlib.import_module(module).main, argv)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return _Result(status, shown + capsys.readouterr().err)


def assert_refused(result, *names):
    """Non-zero exit, no traceback, the last stderr line is `error: ...` and names every one of `names`."""
    err = result.stderr
    assert result.returncode != 0, f"exit 0; stderr:\n{err}"
    assert "Traceback" not in err, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("error: "), err
    for name in names:
        assert str(name) in last, f"{name!r} not in the error line: {last}"
    return last


def copy_shapes(env, name):
    dst = env["root"] / name
    if not dst.exists():
        shutil.copytree(env["shapes"], dst)
    return dst


# ------------------------------------------------------------------------------------------- the refusal matrix
def _missing_data_dir(env):
    missing = env["root"] / "nowhere"
    return attn_args(env, f"DATA_DIR={missing}"), [missing, "DATA_DIR not found"]


def _missing_image(env):
    data = copy_shapes(env, "missing_image")
    victim = sorted((data / "images").rglob("*.png"))[0]
    victim.unlink()
    return attn_args(env, f"DATA_DIR={data}"), [victim]


def _corrupt_image(env):
    data = copy_shapes(env, "corrupt_images")
    images = sorted((data / "images").rglob("*.png"))
    for p in images:
        p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return attn_args(env, f"DATA_DIR={data}"), ["cannot read image", str(data / "images")]


def _unsafe_pickle(env):
    data = copy_shapes(env, "unsafe_pickle")
    with open(data / "train" / "filenames.pickle", "wb") as f:
        pickle.dump(_Shell(), f)
    return attn_args(env, f"DATA_DIR={data}"), [data / "train" / "filenames.pickle", "posix.system"]


def _yaml_syntax(env):
    bad = env["root"] / "syntax.yml"
    bad.write_text("TRAIN:\n  BATCH_SIZE: [4\n")
    return ["main.py", "--cfg", str(bad)], [bad, "not valid YAML"]


def _yaml_unknown_key(env):
    bad = env["root"] / "unknown.yml"
    bad.write_text("TRAIN:\n  BATCH_SIZ: 4\n")
    return ["main.py", "--cfg", str(bad)], [bad, "TRAIN.BATCH_SIZ", "TRAIN.BATCH_SIZE"]


def _wrong_type(env):
    return attn_args(env, "TRAIN.BATCH_SIZE=four"), ["TRAIN.BATCH_SIZE", "expects int", "four"]


def _all_unknown_sentence(env):
    out = env["root"] / "gen_unknown"
    return (["-m", "tools.generate", "--cfg", "cfg/shapes_attn.yml", "--gpu", "-1", "--out", str(out), "--set",
             f"DATA_DIR={env['shapes']}", f"TRAIN.NET_E={env['net_e']}", f"TRAIN.NET_G={env['netG_gf4.pth']}",
             *[f"{k}={v}" for k, v in TINY.items()], "--", "zebra giraffe"],
            ["sentence 0", "zebra giraffe", "none of its words is in the vocabulary"])


def _resume_without_snapshot(env):
    out = env["root"] / "fresh_run"
    return attn_args(env, extra=["--output_dir", str(out), "--resume"]), [out / "Model" / "training_state.pth",
                                                                        "--resume"]


def _gf_dim_mismatch(env):
    return (attn_args(env, "TRAIN.FLAG=False", f"TRAIN.NET_G={env['netG_gf8.pth']}"),
            [env["netG_gf8.pth"], "G_NET", "GAN.GF_DIM 8, config says 4"])


def _other_architecture(env):
    return (attn_args(env, "TRAIN.FLAG=False", f"TRAIN.NET_G={env['netG_ssa.pth']}"),
            [env["netG_ssa.pth"], "SSA-GAN generator (MODEL ssagan)", "AttnGAN generator"])


def _unsafe_checkpoint(env):
    unsafe = env["root"] / "unsafe.pth"
    return attn_args(env, "TRAIN.FLAG=False", f"TRAIN.NET_G={unsafe}"), [unsafe, "refusing", "weights_only=True", "posix.system"]


def _not_a_checkpoint(env):
    notes = env["root"] / "notes.txt"
    return (attn_args(env, "TRAIN.FLAG=False", f"TRAIN.NET_G={env['netG_gf4.pth']}", f"TRAIN.NET_E={notes}"),
            [notes, "not a readable PyTorch checkpoint", "text encoder", "Unsupported operand"])


def _output_dir_is_a_file(env):
    taken = env["root"] / "taken.txt"
    taken.write_text("a file where the run folder should go\n")
    return (["pretrain_DAMSM.py", "--cfg", "cfg/DAMSM/shapes.yml", "--gpu", "-1", "--output_dir", str(taken),
             "--set", f"DATA_DIR={env['shapes']}", "WORKERS=0", "TEXT.EMBEDDING_DIM=32", "DAMSM.IMAGE_SIZE=32"],
            [taken, "--output_dir", "existing file"])


def _evaluate_missing_images(env):
    missing = env["root"] / "no_samples"
    return ["-m", "eval.evaluate", "--images", str(missing), "--protocols", "is1k"], [missing]


def _import_strict_text(env):
    src = env["root"] / "strict_src"
    _caption_folder(src, b"a red circle\nbad \xff\xfe byte here\n")
    return (["-m", "tools.import_folder", "--src", str(src), "--out", str(env["root"] / "strict_out"),
             "--strict_text"], [src / "b.txt", "line 2", "invalid UTF-8"])


CASES = {f.__name__.lstrip("_"): f for f in [
    _missing_data_dir, _missing_image, _corrupt_image, _unsafe_pickle, _yaml_syntax, _yaml_unknown_key, _wrong_type,
    _all_unknown_sentence, _resume_without_snapshot, _gf_dim_mismatch, _other_architecture, _unsafe_checkpoint,
    _not_a_checkpoint, _output_dir_is_a_file, _evaluate_missing_images, _import_strict_text]}


# one case per entry point through a real interpreter start (the `__main__` wiring); the rest in this process
IN_SUBPROCESS = {"missing_data_dir", "output_dir_is_a_file", "all_unknown_sentence", "evaluate_missing_images",
                 "import_strict_text"}


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_is_one_clean_line(env, case, capsys, monkeypatch):
    monkeypatch.delenv("T2I_DEBUG", raising=False)
    args, names = CASES[case](env)
    result = run(args) if case in IN_SUBPROCESS else run_here(args, capsys)
    assert_refused(result, *names)
    assert not os.path.exists(os.path.join(ROOT, "PWNED"))


def test_debug_shows_the_traceback(env, monkeypatch):
    args, _ = _missing_data_dir(env)
    result = run([args[0], "--debug", *args[1:]])
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr and "DatasetLayoutError" in result.stderr
    monkeypatch.setenv("T2I_DEBUG", "1")
    from datasets import DatasetLayoutError
    with pytest.raises(DatasetLayoutError):
        run_cli(importlib.import_module("main").main, args[1:])


# ------------------------------------------------------------------------------------------- text-input warnings
def _caption_folder(src, b_text: bytes):
    from PIL import Image

    src.mkdir(parents=True, exist_ok=True)
    for name, colour, text in (("a", "red", b"a red circle\na red thing\n"), ("b", "blue", b_text),
                               ("c", "green", b"a green square\n")):
        Image.new("RGB", (16, 16), colour).save(src / f"{name}.png")
        (src / f"{name}.txt").write_bytes(text)


def test_import_warns_on_invalid_utf8_and_long_captions(env, capsys):
    src = env["root"] / "warn_src"
    long_line = " ".join(["blue"] * 130)
    _caption_folder(src, b"a blue circle\nbad \xff byte\n" + long_line.encode() + b"\n")
    out = env["root"] / "warn_out"
    result = run_here(["-m", "tools.import_folder", "--src", str(src), "--out", str(out)], capsys)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    utf8 = [line for line in result.stderr.splitlines() if "invalid UTF-8" in line]
    assert len(utf8) == 1 and f"{src / 'b.txt'}, line 2" in utf8[0], result.stderr  # once per file
    assert f"{src / 'b.txt'}, line 3: 130 words" in result.stderr and "30 words dropped" in result.stderr
    copied = (out / "text" / "b.txt").read_text(encoding="utf-8").splitlines()
    assert copied[1] == "bad \ufffd byte" and len(copied[2].split()) == 100


def test_generate_cuts_a_long_sentence_with_a_warning(env, capsys):
    out = env["root"] / "gen_long"
    long = " ".join([SENTENCE] * 5)  # 35 words; the shapes config has TEXT.WORDS_NUM 30
    result = run_here(["-m", "tools.generate", "--cfg", "cfg/shapes_attn.yml", "--gpu", "-1", "--out", str(out),
                       "--set", f"DATA_DIR={env['shapes']}", f"TRAIN.NET_E={env['net_e']}",
                       f"TRAIN.NET_G={env['netG_gf4.pth']}", *[f"{k}={v}" for k, v in TINY.items()], "--", long],
                      capsys)
    assert result.returncode == 0, result.stderr
    assert "sentence 0: 35 words, more than TEXT.WORDS_NUM=30" in result.stderr
    assert "5 words dropped" in result.stderr
    assert (out / "0_s_0_g1.png").exists()


# ------------------------------------------------------------------------------------------- the functions behind
def test_read_text_lines_warns_once_per_file_or_refuses(tmp_path):
    path = tmp_path / "caps.txt"
    path.write_bytes(b"fine\nbad \xc3 one\nbad \xff two\n")
    with pytest.warns(UserWarning, match=r"caps.txt, line 2: invalid UTF-8 \(byte 0xc3; 2 lines affected\)"):
        assert read_text_lines(str(path))[1:3] == ["bad \ufffd one", "bad \ufffd two"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_text_lines(str(path))  # the second read of the same file does not warn again
    with pytest.raises(ValueError, match=r"caps.txt, line 2: invalid UTF-8.*STRICT_TEXT"):
        read_text_lines(str(path), strict=True)


def test_cut_sentence_counts_words_as_the_tokenizer_does():
    s = "A small, red-bird; with café wings and a long tail"
    assert len(tokenize_caption(s)) == 11
    with pytest.warns(UserWarning, match=r"typed: 11 words, more than TEXT.WORDS_NUM=4.*7 words dropped"):
        assert cut_sentence(s, 4, "typed") == "A small, red-bird"
    assert cut_sentence(s, 11) == s and cut_sentence(s, 0) == s


def test_tokenizer_as_nltk_regexp_tokenizer():
    """nltk's RegexpTokenizer(r"\\w+") (the `regex` engine: a combining accent stays inside its word), then AttnGAN's
    ASCII filter; values checked against nltk 3.9."""
    assert tokenize_caption("A café bird, über-small 42 _x_") == ["a", "caf", "bird", "ber", "small", "42", "_x_"]
    assert tokenize_caption("ÄÖ ü\u00e9\u0301 cafe\u0301s x\ufffd\ufffdy") == ["cafes", "x", "y"]
    assert tokenize_caption("tab\tnew\nline") == ["tab", "new", "line"]


def test_mismatch_message_names_tensors_and_keys(tmp_path):
    small, big = G_NET(4, 32, 100, 100, 2, 1, base_size=32), G_NET(8, 32, 100, 100, 3, 1, base_size=32)
    msg = describe_mismatch(small, big.state_dict(), "big.pth")
    head = msg.splitlines()[0]
    assert head.startswith("big.pth does not fit G_NET (")
    assert "GAN.GF_DIM 8, config says 4" in head and "TREE.BRANCH_NUM 3, config says 2" in head
    assert "size mismatch for h_net1.fc.0.weight: file [1024, 200], model [512, 200]" in msg
    assert "unexpected in the file: h_net3." in msg
    # the CLI form: details first, the headline last
    assert format_error(RuntimeError(msg)).splitlines()[-1] == f"error: {head}"


def test_training_state_as_generator_is_named(tmp_path):
    path = tmp_path / "training_state.pth"
    torch.save({"models": {}, "optimizers": {}, "epoch": 1}, path)
    from miscc.checkpoint import load_state_dict_strict
    with pytest.raises(RuntimeError, match="training state.*not a weights file"):
        load_state_dict_strict(G_NET(4, 32, 100, 100, 2, 1, base_size=32), load_checkpoint(str(path)), str(path))


def test_mismatch_message_names_grid_attention():
    """A generator trained with GAN.GRID_ATTENTION, loaded into one without: the message says which size."""
    plain, grid = G_NET(4, 32, 100, 100, 2, 1, base_size=32), G_NET(4, 32, 100, 100, 2, 1, base_size=32,
                                                                 grid_attention=8)
    head = describe_mismatch(plain, grid.state_dict(), "grid.pth").splitlines()[0]
    assert "GAN.GRID_ATTENTION 8, config says 0" in head
    plain_q = G_NET(4, 32, 100, 100, 2, 1, base_size=32, position_queries=True)
    head = describe_mismatch(plain, plain_q.state_dict(), "posq.pth").splitlines()[0]
    assert "GAN.POSITION_QUERIES True, config says False" in head
    noisy = G_NET(4, 32, 100, 100, 2, 1, base_size=32, grid_attention=8, grid_noise=True)
    head = describe_mismatch(grid, noisy.state_dict(), "noise.pth").splitlines()[0]
    assert "GAN.GRID_NOISE True, config says False" in head
