"""SRCNN: yjn870's key layout, the real x3 weights, colour conversion, the upscale pipeline and the CLI."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from miscc.errors import run_cli
from models.srcnn import SRCNN, load_srcnn, rgb_to_ycbcr, upscale, ycbcr_to_rgb
from tools.srcnn_upscale import main


def _shapes(size=192):
    """Sharp coloured shapes on a light background (a case where SRCNN clearly beats bicubic)."""
    im = Image.new("RGB", (size, size), (240, 240, 230))
    d = ImageDraw.Draw(im)
    d.ellipse((20, 20, 90, 90), fill=(200, 30, 30))
    d.rectangle((100, 30, 170, 100), fill=(20, 60, 200))
    d.ellipse((60, 110, 150, 180), fill=(30, 160, 60), outline=(0, 0, 0), width=3)
    d.polygon([(10, 180), (40, 120), (70, 180)], fill=(250, 200, 0))
    return im


def _psnr_y(a, b):
    ya = rgb_to_ycbcr(np.asarray(a, dtype=np.float64))[..., 0]
    yb = rgb_to_ycbcr(np.asarray(b, dtype=np.float64))[..., 0]
    return 10 * np.log10(255.0 ** 2 / np.mean((ya - yb) ** 2))


def _identity_srcnn():
    """Weights under which SRCNN returns its (non-negative) input: a centre tap passed through one channel."""
    m = SRCNN()
    with torch.no_grad():
        for conv in (m.conv1, m.conv2, m.conv3):
            conv.weight.zero_()
            conv.bias.zero_()
            k = conv.weight.shape[-1] // 2
            conv.weight[0, 0, k, k] = 1.0
    return m.eval()


def test_architecture_keys_and_parameter_count():
    m = SRCNN()
    assert list(m.state_dict()) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight",
                                    "conv3.bias"]
    assert sum(p.numel() for p in m.parameters()) == 57_281
    assert m(torch.rand(1, 1, 21, 17)).shape == (1, 1, 21, 17)  # 'same' padding


def test_real_x3_weights_load_and_beat_bicubic(shared_dir):
    model = load_srcnn(str(shared_dir / "assets" / "weights" / "srcnn_x3.pth"))
    assert model.conv1.weight.shape == (64, 1, 9, 9) and not model.training
    original = _shapes(192)
    small = original.resize((64, 64), Image.BICUBIC)
    bicubic = small.resize((192, 192), Image.BICUBIC)
    sr = upscale(small, model, scale=3)
    assert isinstance(sr, Image.Image) and sr.size == (192, 192)
    gain = _psnr_y(sr, original) - _psnr_y(bicubic, original)
    assert gain > 1.0, f"SRCNN x3 PSNR gain over bicubic on Y only {gain:.2f} dB"


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="srcnn_x9.pth"):
        load_srcnn(str(tmp_path / "srcnn_x9.pth"))
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="other.pth.*not an SRCNN"):
        load_srcnn(str(tmp_path / "other.pth"))
    torch.save({"module." + k: v for k, v in SRCNN().state_dict().items()}, tmp_path / "dp.pth")
    assert load_srcnn(str(tmp_path / "dp.pth")).conv3.weight.shape == (1, 32, 5, 5)


def test_ycbcr_studio_range():
    ycc = rgb_to_ycbcr(np.array([[0.0, 0.0, 0.0], [255.0, 255.0, 255.0]]))
    np.testing.assert_allclose(ycc[:, 0], [16.0, 16 + 218.859 * 255 / 256], rtol=1e-6)
    np.testing.assert_allclose(ycc[:, 1:], 128.0, atol=0.01)
    rgb = np.random.default_rng(0).uniform(0, 255, (50, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-9)  # exact (yjn870's is ~1 level off)
    np.testing.assert_allclose(rgb_to_ycbcr(np.array([[10.0, 200.0, 30.0]]))[0],
                               [16 + (64.738 * 10 + 129.057 * 200 + 25.064 * 30) / 256,
                                128 + (-37.945 * 10 - 74.494 * 200 + 112.439 * 30) / 256,
                                128 + (112.439 * 10 - 94.154 * 200 - 18.285 * 30) / 256], rtol=1e-12)


def test_upscale_is_bicubic_first_then_srcnn_on_y():
    """With identity weights the result is the bicubic upsampling itself (up to the YCbCr round trip)."""
    img = np.asarray(_shapes(48))
    out = upscale(img, _identity_srcnn(), scale=3)
    assert out.shape == (144, 144, 3) and out.dtype == np.uint8
    bicubic = np.asarray(Image.fromarray(img).resize((144, 144), Image.BICUBIC)).astype(int)
    assert np.abs(out.astype(int) - bicubic).max() <= 1  # float32 Y/255 through the convolutions, then rounding


def test_upscale_tensor_inputs_and_minus_one_one_conversion():
    model = SRCNN().eval()
    u8 = torch.randint(0, 256, (2, 3, 10, 12), dtype=torch.uint8)
    out = upscale(u8, model, scale=2)
    assert out.shape == (2, 3, 20, 24) and out.dtype == torch.uint8
    assert upscale(u8[0], model, scale=2).shape == (3, 20, 24)
    # Generator output in [-1, 1] maps with round((x + 1) * 127.5): -1 -> 0, 1 -> 255, negative values do not wrap.
    as_float = u8.float() / 127.5 - 1.0
    assert torch.equal(upscale(as_float, model, scale=2), out)
    per_image = np.stack([upscale(u8[i].permute(1, 2, 0).numpy(), model, scale=2) for i in range(2)])
    assert np.array_equal(per_image, out.permute(0, 2, 3, 1).numpy())
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        upscale(u8.float(), model)
    with pytest.raises(ValueError, match="scale"):
        upscale(u8, model, scale=0)


def _save_weights(path):
    torch.save(_identity_srcnn().state_dict(), path)
    return str(path)


def test_cli_writes_next_to_originals_and_into_out(tmp_path, capsys):
    weights = _save_weights(tmp_path / "srcnn_x3.pth")
    folder = tmp_path / "imgs"
    folder.mkdir()
    _shapes(30).save(folder / "a.png")
    _shapes(24).convert("L").save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    assert main(["--weights", weights, "--scale", "3", "--input", str(folder)]) == 0
    assert Image.open(folder / "a_x3.png").size == (90, 90)
    assert Image.open(folder / "b_x3.png").mode == "RGB"
    assert main(["--weights", weights, "--input", str(folder)]) == 0  # outputs are not upscaled again
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_x3.png", "b.jpg", "b_x3.png", "notes.txt"]
    out = tmp_path / "out"
    assert main(["--weights", weights, "--input", str(folder / "a.png"), "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["a_x3.png"]
    capsys.readouterr()
    assert main(["--weights", weights, "--scale", "2", "--input", str(folder / "a.png"), "--out", str(out)]) == 0
    assert "trained for x3" in capsys.readouterr().err
    assert Image.open(out / "a_x2.png").size == (60, 60)


def test_cli_errors(tmp_path, capsys):
    assert run_cli(main, ["--weights", str(tmp_path / "missing_x3.pth"), "--input", str(tmp_path)]) == 2
    assert "missing_x3.pth" in capsys.readouterr().err
    weights = _save_weights(tmp_path / "w.pth")
    assert run_cli(main, ["--weights", weights, "--input", str(tmp_path / "nothing_here")]) == 2
    assert "nothing_here" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(main, ["--weights", weights, "--input", str(empty)]) == 2
    assert "no images" in capsys.readouterr().err
