"""The FID/IS Inception-v3 ("inception-v3-compat", torch-fidelity) from a LOCAL weights file; nothing is downloaded.

The network, its TF1-exact bilinear resize to 299 and its `(x - 128) / 128` input scaling are torch-fidelity's own
`FeatureExtractorInceptionV3`, so features (and every metric computed from them) equal `torch_fidelity.
calculate_metrics` on the same images. Features: '2048' (pool3: FID, KID) and 'logits_unbiased' (fc without bias:
IS), as torch-fidelity uses them.

Weights: torch-fidelity's `weights-inception-2015-12-05-6726825d.pth` or pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth`. Both are conversions of the same TF graph (inception-2015-12-05) and have
identical state-dict keys and shapes (checked against pytorch-fid's `fid_inception_v3()` module tree), so either loads
strictly without a key remap. That their values agree could not be checked offline (pytorch-fid's PR #16 reports its
model matches TF's outputs on identical inputs, as torch-fidelity's does). pytorch-fid's own forward pass differs
(PyTorch bilinear resize); ours is torch-fidelity's whichever file is used. The file is read with
`torch.load(weights_only=True)`; torch-fidelity itself would unpickle it with `weights_only=False`, so it gets a
re-serialised in-memory copy of the checked tensors instead of the path.

bf16 (`bf16=True`, autocast around the network): measured with bench/bench_inception.py --precision on CPU (random
weights, 150 + 150 synthetic 32px images): pool3 features differ from fp32 by 1.2% relative RMS; FID between the two
sets moved by 1.4% (0.7306 -> 0.7405), KID by 1.2%, IS by 0.04% (random-weight IS is near 1, so that last figure says
little). Speed on the 2 AMX-capable Xeon cores used here: 12.3 images/s fp32, 20.0 bf16 (batch 32). Good for
monitoring during training; keep fp32 for reported numbers (the cache keeps bf16 and fp32 real statistics apart).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
from collections import OrderedDict
from typing import Sequence

import torch

from miscc.checkpoint import load_checkpoint, strip_module_prefix
from eval.images import iter_uint8_batches, to_uint8
from miscc.errors import InputError, MissingFileError

ENV_WEIGHTS = "T2I_INCEPTION_WEIGHTS"
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
EXTRACTOR_NAME = "inception-v3-compat"
RESIZE_METHOD = "tf1-bilinear-299"  # torch-fidelity interpolate_bilinear_2d_like_tensorflow1x
FEATURES = ("64", "192", "768", "2048", "logits_unbiased", "logits")


class InceptionWeightsError(MissingFileError):
    """The Inception weights file is missing or is not an inception-2015-12-05 state dict."""


def _missing_message(detail: str) -> str:
    return (
        f"{detail}. FID/KID/IS need the Inception-v3 FID weights as a local file: torch-fidelity's "
        f"'{TORCH_FIDELITY_FILE}' (github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TORCH_FIDELITY_FILE}). "
        f"pytorch-fid's '{PYTORCH_FID_FILE}' also works: it has the same keys and loads as is. Put either file "
        f"anywhere (e.g. weights/{TORCH_FIDELITY_FILE}) and pass its path (--inception, EVAL.INCEPTION_WEIGHTS) or "
        f"set the environment variable {ENV_WEIGHTS}; nothing is downloaded at run time."
    )


def resolve_inception_weights(path: str | os.PathLike | None = None) -> str:
    """The weights file to use: `path`, else $T2I_INCEPTION_WEIGHTS; a clear error when neither names a file."""
    if path:
        source = "the given path"
    else:
        path, source = os.environ.get(ENV_WEIGHTS, ""), f"${ENV_WEIGHTS}"
    if not path:
        raise InceptionWeightsError(_missing_message(f"no Inception weights given (no path and ${ENV_WEIGHTS} unset)"))
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InceptionWeightsError(_missing_message(f"Inception weights not found: {path} (from {source})"))
    return path


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str) -> str:
    """sha256 hex digest of a file, cached per (real path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def load_inception_state_dict(path: str) -> OrderedDict:
    """The state dict in `path`, loaded as data only; a `module.` prefix is removed."""
    sd = load_checkpoint(path, what="Inception weights")
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise InceptionWeightsError(_missing_message(f"{path} is not a plain state dict of tensors"))
    return strip_module_prefix(sd)


def _torch_fidelity_inception(state_dict: dict, features: Sequence[str], source: str):
    """torch-fidelity's FeatureExtractorInceptionV3 loaded from an in-memory copy of `state_dict` (strict)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buf = io.BytesIO()
    torch.save(OrderedDict(state_dict), buf)
    buf.seek(0)
    try:
        return FeatureExtractorInceptionV3(EXTRACTOR_NAME, list(features), feature_extractor_weights_path=buf)
    except RuntimeError as e:
        raise InceptionWeightsError(
            _missing_message(f"{source} does not fit torch-fidelity's Inception-v3 ({str(e).splitlines()[0]})")
        ) from e


def random_inception_state_dict(seed: int = 0) -> OrderedDict:
    """Random inception-2015-12-05-shaped weights, for tests and speed benchmarks only (never for reported numbers).

    Convolutions are He-normal and BatchNorm is the identity, so activations keep their scale through the 94 layers
    and the pool3 features are O(0.1-1) (PyTorch's default init makes them vanish); fc is normal with std
    12/sqrt(2048), which spreads the logits over a few units so the class probabilities are not all uniform.
    """
    from torchvision.models.inception import Inception3

    gen = torch.Generator().manual_seed(seed)
    skeleton = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    sd = OrderedDict()
    for key, value in skeleton.state_dict().items():
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            value = torch.randn(value.shape, generator=gen) * math.sqrt(2.0 / fan_in)
        elif key == "fc.weight":
            value = torch.randn(value.shape, generator=gen) * 12.0 / math.sqrt(value.shape[1])
        elif key == "fc.bias":
            value = torch.randn(value.shape, generator=gen) * 0.1
        elif key.endswith(("bn.weight", "bn.running_var")):
            value = torch.ones_like(value)
        elif key.endswith(("bn.bias", "bn.running_mean")):
            value = torch.zeros_like(value)
        sd[key] = value
    return sd


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class FeatureExtractor:
    """Batched features of uint8 (or [-1, 1] float) images from any `model(uint8 [B, 3, H, W]) -> tuple` whose
    outputs are named by `features`; runs on `device` (default CUDA if present), optionally under bfloat16 autocast.
    Outputs are float32 on the CPU. `name`, `weights_path`, `weights_sha256` and `resize_method` are provenance.
    """

    def __init__(self, model: torch.nn.Module, features: Sequence[str], name: str, weights_path: str | None = None,
                 weights_sha256: str | None = None, resize_method: str = "", device: str | torch.device | None = None,
                 bf16: bool = False, batch_size: int = 64):
        self.features = tuple(features)
        self.name, self.weights_path, self.weights_sha256 = name, weights_path, weights_sha256
        self.resize_method = resize_method
        self.device = torch.device(device) if device is not None else _default_device()
        self.bf16 = bool(bf16)
        self.batch_size = int(batch_size)
        self.model = model.to(self.device).eval()

    @property
    def dtype_name(self) -> str:
        return "bf16-autocast" if self.bf16 else "fp32"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of one batch: {feature name: float32 [B, D] on the CPU}."""
        x = to_uint8(images).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        return {name: f.float().cpu() for name, f in zip(self.features, out)}

    def extract(self, source, limit: int | None = None, resize: int | None = None) -> dict[str, torch.Tensor]:
        """Features of every image in `source` (folder, file list, tensor or iterable of batches; see
        `iter_uint8_batches`), in order."""
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.features}
        for batch in iter_uint8_batches(source, self.batch_size, limit=limit, resize=resize):
            for start in range(0, batch.shape[0], self.batch_size):
                for name, f in self(batch[start:start + self.batch_size]).items():
                    parts[name].append(f)
        if not parts[self.features[0]]:
            raise InputError("no images to extract features from")
        return {name: torch.cat(p) for name, p in parts.items()}

    def describe(self) -> dict:
        """Provenance of these features."""
        return {"feature_extractor": self.name, "feature_extractor_weights": self.weights_path,
                "feature_extractor_sha256": self.weights_sha256, "resize": self.resize_method,
                "dtype": self.dtype_name}


class InceptionExtractor(FeatureExtractor):
    """torch-fidelity's Inception-v3 from local weights (see the module docstring) as a `FeatureExtractor`.

    `weights_path` (else $T2I_INCEPTION_WEIGHTS) names the weights file; `state_dict` instead takes weights in
    memory (tests, benchmarks), and `weights_sha256` is then the hash of their serialisation. `bf16`: see the module
    docstring for its effect on FID.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, features: Sequence[str] = ("2048",
                 "logits_unbiased"), device: str | torch.device | None = None, bf16: bool = False,
                 batch_size: int = 64, state_dict: dict | None = None):
        unknown = [f for f in features if f not in FEATURES]
        if unknown or not features:
            raise InputError(f"unknown Inception features {unknown or list(features)}; choose from {FEATURES}")
        if state_dict is None:
            weights_path = resolve_inception_weights(weights_path)
            state_dict = load_inception_state_dict(weights_path)
            sha, source = file_sha256(weights_path), weights_path
        else:
            weights_path = None
            buf = io.BytesIO()
            torch.save(OrderedDict(state_dict), buf)
            sha, source = hashlib.sha256(buf.getvalue()).hexdigest(), "the given state dict"
        model = _torch_fidelity_inception(state_dict, features, source)
        super().__init__(model, features, EXTRACTOR_NAME, weights_path, sha, RESIZE_METHOD, device, bf16, batch_size)
