"""Checked reading of the results' hand-written YAML files (``results/published.yaml``, ``results/speed_targets.yaml``):
every problem is a :class:`~mmea_lightning.data.errors.DataFormatError` naming the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mmea_lightning.data.errors import DataFormatError

__all__ = ["YamlReader", "mapping_nodes"]


def mapping_nodes(mapping: yaml.MappingNode) -> dict[str, yaml.Node]:
    """The ``{key: value node}`` of a YAML mapping node (scalar keys)."""
    return {key.value: value for key, value in mapping.value if isinstance(key, yaml.ScalarNode)}


class YamlReader:
    """One YAML file, composed into nodes (which keep their lines) and checked one node at a time."""

    def __init__(self, path: Path):
        self.path = path

    def compose(self, what: str, fix_missing: str) -> yaml.Node | None:
        """The file's root node. ``what`` names the file in the error when it does not exist, ``fix_missing`` says
        how to point at it."""
        if not self.path.is_file():
            raise DataFormatError(self.path, f"{what} does not exist.", fix=fix_missing)
        try:
            return yaml.compose(self.path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            raise DataFormatError(self.path, f"not valid YAML: {err}", line=mark.line + 1 if mark else None,
                                  fix="fix the YAML syntax.") from err

    def fail(self, node: yaml.Node | None, problem: str, fix: str) -> DataFormatError:
        return DataFormatError(self.path, problem, line=node.start_mark.line + 1 if node is not None else None,
                               fix=fix)

    def mapping(self, node: yaml.Node | None, what: str, required: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping.", f"write {what} as 'key: value' pairs.")
        fields = mapping_nodes(node)
        missing = [key for key in required if key not in fields]
        if missing:
            raise self.fail(node, f"{what} lacks {', '.join(missing)}.", f"add {', '.join(missing)}.")
        unknown = sorted(set(fields) - set(required) - set(optional))
        if unknown:
            raise self.fail(node, f"{what} has unknown keys {unknown}.",
                            f"use only {', '.join(required + optional)}.")
        return fields

    def value(self, node: yaml.Node, kind: type, what: str) -> Any:
        value = yaml.safe_load(yaml.serialize(node))
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok or (kind is str and not value):
            raise self.fail(node, f"{what} is {value!r}, not a {'non-empty ' if kind is str else ''}{kind.__name__}.",
                            f"give {what} as a {kind.__name__}.")
        return value

    def fraction(self, node: yaml.Node, what: str) -> float:
        value = self.value(node, float, what)
        if not 0.0 <= value <= 1.0:
            raise self.fail(node, f"{what} is {value}, not a fraction in [0, 1].",
                            "write metrics as fractions (0.658, not 65.8).")
        return value
