"""Real CUB-200-2011 photographs (../shared/assets, 538 of them, 9 classes) with the official AttnGAN metadata:
AttnGAN's crops, one training step per model family, DAMSM validation on the class-sorted test split, the official
example sentences, and odd real-world image files made from a real photograph."""
import os

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from datasets import CorruptImageError, TextDataset, build_dataloader, build_dataset, prepare_data
from miscc.config import load_config
from tests.helpers import tiny_encoders
from tools.import_folder import FolderImportError, import_folder
from trainers.runtime import Runtime

pytestmark = [pytest.mark.filterwarnings("ignore:skipping [0-9]+ missing image"), pytest.mark.usefixtures("one_thread")]
CPU = Runtime(device=torch.device("cpu"))
RGB_KEY = "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18"
GREY_KEYS = ["009.Brewer_Blackbird/Brewer_Blackbird_0028_2682", "025.Pelagic_Cormorant/Pelagic_Cormorant_0022_23802"]
TINY = {"WORKERS": 0, "DATA.SKIP_CORRUPT": True, "DATA.CACHE_IMAGES": 1, "TRAIN.BATCH_SIZE": 4,
        "TRAIN.LOG_INTERVAL": 1, "TRAIN.IMAGE_INTERVAL": 1000, "TEXT.EMBEDDING_DIM": 16,
        "DAMSM.IMAGE_ENCODER": "small", "DAMSM.IMAGE_SIZE": 32}


def _cfg(path, birds, **extra):
    return load_config(path, {**TINY, "DATA_DIR": str(birds), **extra})


def _params(net):
    return torch.cat([p.detach().flatten().clone() for p in net.parameters()])


# ---- (a) AttnGAN's crop ---------------------------------------------------------------------------------------------

def _attngan_image(birds, key, imsizes):
    """An independent rewrite of AttnGAN's `get_imgs` (A/code/datasets.py) with augmentation off: the bbox square
    of half-side int(0.75*max(w, h)) about the box centre, clamped; Scale(int(imsize*76/64)); CenterCrop(imsize);
    each smaller branch Scale(size) of that crop; normalised to [-1, 1]."""
    rows = open(birds / "CUB_200_2011" / "images.txt").read().split("\n")
    row = next(i for i, line in enumerate(rows) if line.split(" ")[1:] == [key + ".jpg"])
    bbox = [float(v) for v in open(birds / "CUB_200_2011" / "bounding_boxes.txt").read().split("\n")[row].split()[1:]]
    img = Image.open(birds / "CUB_200_2011" / "images" / f"{key}.jpg").convert("RGB")
    width, height = img.size
    r = int(np.maximum(bbox[2], bbox[3]) * 0.75)
    center_x, center_y = int((2 * bbox[0] + bbox[2]) / 2), int((2 * bbox[1] + bbox[3]) / 2)
    y1, y2 = np.maximum(0, center_y - r), np.minimum(height, center_y + r)
    x1, x2 = np.maximum(0, center_x - r), np.minimum(width, center_x + r)
    img = img.crop([x1, y1, x2, y2])
    img = T.Compose([T.Resize(int(imsizes[-1] * 76 / 64)), T.CenterCrop(imsizes[-1])])(img)
    norm = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    return [norm(T.Resize(s)(img) if s != imsizes[-1] else img) for s in imsizes]


@pytest.mark.parametrize("key", [RGB_KEY] + GREY_KEYS)
def test_crops_equal_attngans(real_birds, key):
    with Image.open(real_birds / "CUB_200_2011" / "images" / f"{key}.jpg") as im:
        assert im.mode == ("RGB" if key == RGB_KEY else "L")  # the two greyscale originals of the 538
    split = "test" if key.startswith(("001.", "009.")) else "train"
    ds = TextDataset(real_birds, split, layout="cub", base_size=64, branch_num=2, augment=False, skip_corrupt=True)
    assert ds.n_skipped + len(ds) == (2933 if split == "test" else 8855) and len(ds) > 170  # the 538 photographs
    ours = ds.get_imgs(ds.filenames.index(key))
    theirs = _attngan_image(real_birds, key, [64, 128])
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


# ---- (b) one step per family ----------------------------------------------------------------------------------------

def test_one_damsm_attngan_and_ssagan_step_on_real_birds(real_birds, tmp_path):
    from models.attngan.trainer import AttnGANTrainer
    from models.damsm.trainer import DAMSMTrainer
    from models.ssagan.trainer import SSAGANTrainer

    damsm_cfg = _cfg("cfg/DAMSM/bird.yml", real_birds, **{"TREE.BASE_SIZE": 64})
    attn_cfg = _cfg("cfg/bird_attn2.yml", real_birds, **{"TREE.BRANCH_NUM": 2, "TREE.BASE_SIZE": 32,
                                                          "GAN.GF_DIM": 4, "GAN.DF_DIM": 4})
    attn_cfg.TRAIN.NET_E = tiny_encoders(attn_cfg, tmp_path / "enc")
    ssa_cfg = _cfg("cfg/bird_ssa.yml", real_birds, **{"TREE.BASE_SIZE": 32, "TRAIN.NF": 4,
                                                       "TRAIN.NET_E": attn_cfg.TRAIN.NET_E})
    trainers = {
        "damsm": lambda: DAMSMTrainer(damsm_cfg, CPU, str(tmp_path / "d"), build_dataset(damsm_cfg, "train"), None),
        "attngan": lambda: AttnGANTrainer(attn_cfg, CPU, str(tmp_path / "a"), build_dataset(attn_cfg, "train")),
        "ssagan": lambda: SSAGANTrainer(ssa_cfg, CPU, str(tmp_path / "s"), build_dataset(ssa_cfg, "train")),
    }
    for name, make in trainers.items():
        t = make()
        net = next(iter(t.modules().values()))
        before = _params(net)
        losses = t.train_step(t.make_batch(next(iter(t.epoch_loader(0)))))
        assert all(torch.isfinite(v) for v in losses.values()), (name, losses)
        assert not torch.equal(before, _params(net)), name


# ---- (c) DAMSM validation on the class-sorted test split ------------------------------------------------------------

def test_damsm_validation_on_real_photographs_is_not_zero(real_birds, tmp_path, capsys):
    """The 179 test photographs are 3 classes, sorted: an unshuffled batch is one class, every mismatched pair is
    masked and the losses read 0 (what validation logged before it shuffled); the shuffled validation is not 0."""
    from models.damsm.losses import damsm_losses
    from models.damsm.trainer import DAMSMTrainer

    cfg = _cfg("cfg/DAMSM/bird.yml", real_birds, **{"TREE.BASE_SIZE": 64, "TRAIN.BATCH_SIZE": 16,
                                                     "DAMSM.VALID_BATCHES": 3, "DAMSM.RPREC_SAMPLES": 40})
    valid = build_dataset(cfg, "test")
    assert sorted(set(valid.class_ids.tolist())) == [1, 9, 14] and list(valid.class_ids) == sorted(valid.class_ids)
    t = DAMSMTrainer(cfg, CPU, str(tmp_path), build_dataset(cfg, "train"), valid)
    unshuffled = build_dataloader(valid, batch_size=16, shuffle=False, drop_last=True, workers=0)
    with torch.no_grad():
        t.text_encoder.eval(), t.image_encoder.eval()
        before = [damsm_losses(t.image_encoder, t.text_encoder, prepare_data(raw, "cpu"), t.gammas, CPU)[1]
                  for raw, _ in zip(unshuffled, range(3))]  # 3 batches of 16 from the first class (59 photographs)
    w_before = sum(float(p["w_loss0"] + p["w_loss1"]) for p in before) / 3
    s_before = sum(float(p["s_loss0"] + p["s_loss1"]) for p in before) / 3
    assert w_before == 0.0 and s_before == 0.0
    metrics = t.end_of_epoch(0)
    print(f"real CUB test split, untrained encoders: unshuffled w_loss {w_before:.4f} s_loss {s_before:.4f}; "
          f"shuffled w_loss {metrics['w_loss']:.4f} s_loss {metrics['s_loss']:.4f}, "
          f"R-precision {metrics['R_precision']:.2f}")
    assert metrics["w_loss"] > 1.0 and metrics["s_loss"] > 1.0
    assert 0.0 <= metrics["R_precision"] <= 100.0 and np.isfinite(metrics["R_precision_std"])
    assert t.end_of_epoch(0) == metrics  # seeded: the same batches every epoch and every run


# ---- (d) the official example sentences -----------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:sentence")
def test_official_example_sentences_produce_images_and_attention_maps(real_birds, tmp_path):
    from trainers.common import load_damsm
    from models.registry import get_family
    from trainers.sampling import gen_example

    cfg = _cfg("cfg/bird_attn2.yml", real_birds, **{"TREE.BRANCH_NUM": 2, "TREE.BASE_SIZE": 32, "GAN.GF_DIM": 4,
                                                     "GAN.DF_DIM": 4})
    cfg.TRAIN.NET_E = tiny_encoders(cfg, tmp_path / "enc")
    spec = get_family("attngan")
    torch.manual_seed(0)
    netG = spec.build_generator(cfg).eval()
    dataset = build_dataset(cfg, "test")
    text_encoder, _ = load_damsm(cfg, dataset.n_words, "cpu", with_image_encoder=False)
    with torch.no_grad():
        written = gen_example(lambda *a: spec.generate_stages(netG, *a), text_encoder, dataset, str(tmp_path / "G"),
                              z_dim=cfg.GAN.Z_DIM, device="cpu")
    examples = tmp_path / "G" / "example_captions"
    n_sentences = len([s for s in open(real_birds / "example_captions.txt").read().splitlines() if s.strip()])
    assert n_sentences == 16
    for j in range(n_sentences):
        for name in (f"0_s_{j}_g0.png", f"0_s_{j}_g1.png", f"0_s_{j}_a0.png"):
            assert (examples / name).stat().st_size > 0, name
    assert Image.open(examples / "0_s_0_g1.png").size == (64, 64)
    assert len(os.listdir(tmp_path / "G")) == 24  # example_captions + the 23 text/ entries
    assert len(written) >= 3 * (16 + 23 * 10)


# ---- (e) odd real-world files ---------------------------------------------------------------------------------------

def _odd_files(real_birds, folder):
    """From one real photograph: CMYK JPEG, PNG with alpha (left half transparent over black), 16-bit greyscale PNG,
    a JPEG stored rotated with EXIF orientation 6 (a viewer shows it upright), a truncated JPEG."""
    folder.mkdir()
    photo = Image.open(real_birds / "CUB_200_2011" / "images" / f"{RGB_KEY}.jpg").convert("RGB")
    photo = photo.resize((photo.width // 2, photo.height // 2))
    assert photo.width != photo.height
    photo.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    rgba = photo.convert("RGBA")
    arr = np.array(rgba)
    arr[:, : arr.shape[1] // 2] = 0
    Image.fromarray(arr, "RGBA").save(folder / "alpha.png")
    grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(folder / "deep.png")
    assert Image.open(folder / "deep.png").mode.startswith("I")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(folder / "rotated.jpg", exif=exif, quality=95)
    data = (folder / "cmyk.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    for name in ("cmyk", "alpha", "deep", "rotated", "truncated"):
        (folder / f"{name}.txt").write_text(f"a {name} picture of a black footed albatross\n")
    return photo


def _decoded(out, ext):
    """key -> the decoded full image (shorter edge 76) of every imported image, through TextDataset."""
    images = {}
    for split in ("train", "test"):
        ds = TextDataset(out, split, layout="custom", base_size=64, branch_num=1, augment=False,
                         captions_per_image=1, image_ext=ext)
        images.update({k: ds._decode(i) for i, k in enumerate(ds.filenames)})
    return images


def test_odd_image_files_through_import_folder_and_dataset(real_birds, tmp_path):
    src = tmp_path / "src"
    photo = _odd_files(real_birds, src)
    with pytest.raises(FolderImportError, match=r"truncated\.jpg: not a readable image .*truncated"):
        import_folder(str(src), str(tmp_path / "refused"))
    truncated = (src / "truncated.jpg").read_bytes()
    (src / "truncated.jpg").unlink()

    w, h = photo.size
    size = (76, int(76 * h / w)) if w <= h else (int(76 * w / h), 76)  # shorter edge to 76, as the dataset
    upright = np.asarray(photo.resize(size, Image.BILINEAR), dtype=float)
    mixed = _decoded(import_folder(str(src), str(tmp_path / "mixed"))["out"], "png")  # all re-encoded as PNG
    assert mixed["rotated"].shape == upright.shape  # EXIF orientation applied
    assert np.abs(mixed["rotated"] - upright).mean() < 8
    assert np.abs(mixed["cmyk"] - upright).mean() < 8
    assert mixed["alpha"][:, :30].min() >= 250  # transparent half composited on white, not black
    right = slice(upright.shape[1] // 2 + 4, None)
    assert np.abs(mixed["alpha"][:, right] - upright[:, right]).mean() < 4
    grey = upright.mean(axis=2, keepdims=True)
    assert np.abs(mixed["deep"] - grey).mean() < 8 and mixed["deep"].mean() < 200  # scaled, not clipped to white

    for name in ("alpha", "deep"):
        (src / f"{name}.png").unlink()
        (src / f"{name}.txt").unlink()
    jpgs_out = tmp_path / "jpgs"
    jpgs = _decoded(import_folder(str(src), str(jpgs_out))["out"], "jpg")  # JPEGs copied as they are
    assert jpgs["rotated"].shape == upright.shape and np.abs(jpgs["rotated"] - upright).mean() < 8
    assert np.abs(jpgs["cmyk"] - upright).mean() < 8

    (jpgs_out / "images" / "cmyk.jpg").write_bytes(truncated)  # an image damaged after the import
    split = next(s for s in ("train", "test") if "cmyk" in open(jpgs_out / s / "filenames.pickle", "rb").read().decode("latin1"))
    ds = TextDataset(jpgs_out, split, layout="custom", base_size=64, branch_num=1, captions_per_image=1)
    with pytest.raises(CorruptImageError, match=r"cmyk\.jpg: cannot read image .*DATA.SKIP_CORRUPT"):
        ds[ds.filenames.index("cmyk")]
    ds = TextDataset(jpgs_out, split, layout="custom", base_size=64, branch_num=1, captions_per_image=1,
                     skip_corrupt=True)
    if len(ds) > 1:
        with pytest.warns(UserWarning, match=r"skipping unreadable image .*cmyk\.jpg"):
            item = ds[ds.filenames.index("cmyk")]
        assert item["key"] != "cmyk"
