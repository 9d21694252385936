"""The generator families, by `MODEL` config value: adding a family is one line here (its `models/<name>/family.py`
declares a `FAMILY = trainers.family.ModelFamily(...)`). Families are imported when asked for."""
from __future__ import annotations

import importlib

from miscc.errors import InputError
from trainers.family import ModelFamily

FAMILIES = {
    "attngan": "models.attngan.family",
    "ssagan": "models.ssagan.family",
    "gan_int_cls": "models.gan_int_cls.family",
    "dfgan": "models.dfgan.family",
}


def model_names() -> list[str]:
    """The MODEL values; the first is the default of `tools.demo`."""
    return list(FAMILIES)


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise InputError(f"MODEL must be one of {sorted(FAMILIES)}, got {name!r}")
    return importlib.import_module(FAMILIES[name]).FAMILY
