"""Imports go one way (README, "Architecture"): every module's imports, read with `ast` (function-level ones too),
may only reach its own layer or the layers its layer is allowed to use."""
from __future__ import annotations

import ast
import os
import re

import pytest

from miscc.config import default_config, load_config
from models.registry import FAMILIES, get_family

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".venv", ".git", "tests", "data", "output", "docs", "cfg", "DAMSMencoders", "__pycache__", "shared"}

# layer -> the layers it may import (besides its own)
ALLOWED = {
    "miscc": set(),
    "datasets": {"miscc"},
    "eval": {"miscc"},
    "networks": {"miscc"},
    "trainers": {"miscc", "datasets", "eval", "networks"},
    "family": {"miscc", "datasets", "eval", "networks", "trainers"},
    "registry": {"miscc", "trainers", "family"},
    "entry": {"miscc", "datasets", "eval", "networks", "trainers", "family", "registry"},
    "script": {"miscc", "datasets", "eval", "networks", "trainers", "family", "registry", "entry"},
}
NETWORK_PARTS = {"networks", "losses", "build"}
ENTRY_SCRIPTS = {"main", "pretrain_DAMSM"}


def layer(module: str) -> str | None:
    parts = module.split(".")
    top = parts[0]
    if top in ENTRY_SCRIPTS:
        return "script"
    if top in ("tools", "bench"):
        return "entry"
    if top == "models":
        if module in ("models", "models.srcnn") or len(parts) == 2 and parts[1] != "registry":
            return "networks"  # models/<family>/__init__.py re-exports networks, losses, builders only
        if parts[1] == "registry":
            return "registry"
        return "networks" if parts[2] in NETWORK_PARTS else "family"
    if top in ("miscc", "trainers", "eval"):
        return top
    if top in ("datasets", "data_utils"):
        return "datasets"
    return None  # torch, numpy, the standard library...


def project_modules():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                yield (rel[:-len(".__init__")] if rel.endswith(".__init__") else rel), os.path.join(folder, name)


def imports_of(module: str, path: str):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else [])), node.lineno
            else:
                yield node.module, node.lineno


def test_layer_of_every_project_module():
    unknown = [m for m, _ in project_modules() if layer(m) is None]
    assert not unknown, f"modules outside every layer (add them to tests/test_layering.py): {unknown}"


def test_imports_go_one_way():
    bad = []
    for module, path in project_modules():
        own = layer(module)
        for target, line in imports_of(module, path):
            other = layer(target)
            if other is None or other == own:
                if own == other == "family" and target.split(".")[1] != module.split(".")[1]:
                    bad.append(f"{module}:{line} imports {target} (another family's trainer or declaration)")
                if target.split(".")[0] in ENTRY_SCRIPTS:
                    bad.append(f"{module}:{line} imports the entry script {target}")
                continue
            if other not in ALLOWED[own]:
                bad.append(f"{module}:{line} ({own}) imports {target} ({other})")
            elif target.split(".")[0] in ENTRY_SCRIPTS:
                bad.append(f"{module}:{line} imports the entry script {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_check_sees_violations(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from tools.make_shapes import parse_caption\nfrom . import sibling\n")
    found = list(imports_of("eval.m", str(path)))
    assert ("tools.make_shapes", 2) in found and ("eval", 3) in found
    assert layer("tools.make_shapes") not in ALLOWED["eval"]
    assert layer("trainers.base") not in ALLOWED[layer("models.attngan.networks")]
    assert layer("models.attngan.trainer") == "family" and layer("models.attngan") == "networks"


@pytest.mark.parametrize("path", ["main.py", "tools/demo.py", "tools/generate.py", "tools/app.py"])
def test_entry_points_name_no_family(path):
    """main.py and the tools ask `models.registry`; they neither name a family nor compare MODEL."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    names = "|".join(re.escape(n) for n in FAMILIES)
    assert not re.search(rf"\b({names})\b", text), f"{path} names a family"
    assert "MODEL ==" not in text and "hd5" not in text


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_registry_entries(name):
    family = get_family(name)
    assert family.name == name and FAMILIES[name] == f"models.{name}.family"
    assert family.trainer.startswith(f"models.{name}.trainer:")
    assert family.snapshot % 7 != family.snapshot % 8  # the epoch is in the file name
    assert family.config_section in default_config()
    for text_encoder, path in family.demo_configs.items():
        assert load_config(os.path.join(ROOT, path)).MODEL == name, (text_encoder, path)


def test_latest_generator_asks_the_family(tmp_path):
    for name in ("netG_epoch_2.pth", "netG_epoch_10.pth", "netG_003.pth", "gen_12.pth", "netD_011.pth"):
        (tmp_path / name).write_bytes(b"")
    assert os.path.basename(get_family("attngan").latest_generator(str(tmp_path))) == "netG_epoch_10.pth"
    assert os.path.basename(get_family("ssagan").latest_generator(str(tmp_path))) == "netG_003.pth"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="netG_<NNN>.pth"):
        get_family("ssagan").latest_generator(str(empty))
