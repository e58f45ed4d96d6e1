"""The package's imports run down one line of layers (docs/architecture.md), checked on the source.

Every ``import`` / ``from ... import`` of every module (function-level and ``TYPE_CHECKING`` imports included, relative
imports resolved, ``importlib.import_module("mmea_lightning...")`` with a literal name too) must name a module of the
importer's own layer or of a layer below it, and no module may import a private name (``_x``) from a module outside
its own package.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mmea_lightning"
DOC = ROOT / "docs" / "architecture.md"

#: bottom -> top: a module may import modules of its own layer and of the layers before it. The first component
#: after ``mmea_lightning.`` decides the layer. The same order is written in docs/architecture.md (checked below).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("atomic_files", "config_source", "similarity")),
    ("data", ("data",)),
    ("seeds", ("seeds",)),
    ("models", ("models",)),
    ("eval", ("eval",)),
    ("lightning", ("lightning",)),
    ("entry", ("train", "predict", "api", "run_identity", "run_lock", "run_group", "run_dir", "run_summary",
               "loggers", "cpu_threads")),
    ("results", ("results", "report")),
)
#: a top-level module (``mmea_lightning/<name>.py``) not listed above is an entry-layer module: it may import every
#: layer below ``results`` and nothing below it may import it. A new sub-package must be placed explicitly.
DEFAULT_TOP_LEVEL_MODULE = "entry"
#: ``mmea_lightning/__init__.py``: the public facade (``mmea_lightning.run`` ...), above every layer
FACADE = "facade"

RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)} | {FACADE: len(LAYERS)}
OWNER = {part: name for name, parts in LAYERS for part in parts}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str, *, is_package_file: bool = False) -> str:
    """The layer of the module ``mmea_lightning.<first>...``; a ``ValueError`` for a sub-package with no layer."""
    parts = module.split(".")
    if parts == [PACKAGE]:
        return FACADE
    first = parts[1]
    if first in OWNER:
        return OWNER[first]
    if len(parts) == 2 and not is_package_file:
        return DEFAULT_TOP_LEVEL_MODULE
    raise ValueError(f"{PACKAGE}.{first} has no layer: add it to LAYERS in tests/test_architecture.py and to "
                     f"docs/architecture.md")


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, imported names)`` of every import of the package in ``tree``."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if target == PACKAGE:  # ``from mmea_lightning import similarity``: each name is a module of its own
                found += [(node.lineno, f"{PACKAGE}.{name}", []) for name in names]
            else:
                found.append((node.lineno, target, names))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append((node.lineno, node.args[0].value, []))
    return [(line, target, names) for line, target, names in found
            if target == PACKAGE or target.startswith(PACKAGE + ".")]


def check_source(source: str, module: str, path: str, *, is_package: bool = False) -> list[Violation]:
    """The layer and privacy violations of one module's source."""
    own = layer_of(module, is_package_file=is_package)
    own_package = module if is_package else module.rpartition(".")[0]
    out = []
    for line, target, names in _imported(ast.parse(source), module, is_package):
        try:
            theirs = layer_of(target, is_package_file=(ROOT / Path(*target.split("."))).is_dir())
        except ValueError as err:
            out.append(Violation(path, line, str(err)))
            continue
        if RANK[theirs] > RANK[own]:
            out.append(Violation(path, line, f"{own} imports {theirs} ({target}): a module imports only its own "
                                             f"layer and those below ({' < '.join(n for n, _ in LAYERS)})"))
        target_package = target.rpartition(".")[0]
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private and target_package != own_package and target != own_package:
            out.append(Violation(path, line, f"imports private {private} from {target}: private names stay inside "
                                             f"their package ({target_package}); make it public or move it"))
    return out


def package_modules() -> list[Path]:
    return sorted(p for p in (ROOT / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_import_runs_down_the_layers():
    violations = []
    for path in package_modules():
        module = module_name(path)
        try:
            violations += check_source(path.read_text(encoding="utf-8"), module, str(path.relative_to(ROOT)),
                                       is_package=path.name == "__init__.py")
        except ValueError as err:
            violations.append(Violation(str(path.relative_to(ROOT)), 1, str(err)))
    assert not violations, "imports against the layer order (docs/architecture.md):\n" + "\n".join(
        map(str, violations))


def test_every_sub_package_has_a_layer():
    for path in (ROOT / PACKAGE).iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            assert path.name in OWNER, f"{PACKAGE}/{path.name}/ has no layer in tests/test_architecture.py"


def test_the_documented_order_is_the_checked_one():
    """docs/architecture.md states the order on one line (``core -> data -> ...``) and places every listed module."""
    text = DOC.read_text(encoding="utf-8")
    orders = re.findall(r"^Layers, bottom to top: (.+)$", text, flags=re.M)
    assert len(orders) == 1, "docs/architecture.md must state the order once: 'Layers, bottom to top: a -> b -> ...'"
    assert [part.strip(" `.") for part in orders[0].split("->")] == [name for name, _ in LAYERS]
    for name, parts in LAYERS:
        for part in parts:
            assert f"`{part}" in text, f"docs/architecture.md does not place `{part}` (layer {name})"


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("mmea_lightning.seeds.tuning", "from mmea_lightning.models.encoders import gat", "seeds imports models"),
    ("mmea_lightning.seeds.tuning", "def f():\n    from ..models import losses", "seeds imports models"),
    ("mmea_lightning.data.loader", "import mmea_lightning.lightning.datamodule", "data imports lightning"),
    ("mmea_lightning.similarity", "from mmea_lightning import eval", "core imports eval"),
    ("mmea_lightning.eval.ranking", "import importlib\nimportlib.import_module('mmea_lightning.train')",
     "eval imports entry"),
    ("mmea_lightning.seeds.matching", "from mmea_lightning.similarity import _check_matrix", "private"),
    ("mmea_lightning.lightning.datamodule", "from mmea_lightning.nowhere.sub import x", "has no layer"),
    ("mmea_lightning.data.loader", "from mmea_lightning.nowhere import x", "data imports entry"),  # unlisted module
])
def test_the_checker_finds_violations(module, source, expected):
    found = check_source(source, module, "example.py")
    assert any(expected in v.message for v in found), found


@pytest.mark.parametrize(("module", "source"), [
    ("mmea_lightning.lightning.datamodule", "from mmea_lightning.seeds.base import SeedGenerator"),
    ("mmea_lightning.models.losses.ial", "from .icl import _check_chunk_size"),  # private, same package
    ("mmea_lightning.seeds.matching", "from mmea_lightning.similarity import greedy_matching"),
    ("mmea_lightning.report", "from mmea_lightning.results.collect import collect"),
])
def test_the_checker_allows_imports_down_the_line(module, source):
    assert check_source(source, module, "example.py") == []
