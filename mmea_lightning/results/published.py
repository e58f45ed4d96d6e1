"""Published figures as data: the anchors of ``results/published.yaml`` (one per model, dataset, seed ratio and
setting, with their source) and the model x dataset grid they are read against.

The file's format is described in its header. Every mistake in it is a
:class:`~mmea_lightning.data.errors.DataFormatError` naming the file, the line and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmea_lightning.results.yaml_reader import YamlReader, mapping_nodes

__all__ = ["ANCHOR_METRICS", "Anchor", "Published", "Setting", "load_published", "ratio_key"]

#: the metrics an anchor may give (fractions)
ANCHOR_METRICS: tuple[str, ...] = ("hits@1", "hits@5", "hits@10", "mrr")
_SETTING_FIELDS = ("seeds", "names", "images", "iterative")


def ratio_key(ratio: float) -> float:
    """A seed ratio as a comparable key (0.30000000000000004 and 0.3 are one ratio)."""
    return round(float(ratio), 6)


@dataclass(frozen=True, order=True)
class Setting:
    """What a result's figures depend on besides model, dataset and seed ratio: where the training links come from
    (``gold`` or a seed generator), whether names and images were used, whether training was iterative."""

    seeds: str
    names: bool
    images: bool
    iterative: bool

    @classmethod
    def of_run(cls, run: Mapping[str, Any]) -> Setting:
        """The setting of a collected run (:func:`~mmea_lightning.results.collect.load_run` record)."""
        modalities = str(run.get("modalities") or "").split(",")
        return cls(seeds=str(run.get("seeds") or "gold"), names=bool(run.get("surface")),
                   images="image" in modalities, iterative=bool(run.get("iterative")))

    @property
    def label(self) -> str:
        """E.g. ``gold seeds, no names, no images`` (``, iterative`` when it is)."""
        parts = [f"{self.seeds} seeds", "names" if self.names else "no names", "images" if self.images else "no images"]
        return ", ".join(parts + (["iterative"] if self.iterative else []))


@dataclass(frozen=True)
class Source:
    """Where an anchor's figures come from."""

    key: str
    title: str
    where: str


@dataclass(frozen=True)
class Anchor:
    """One published result: ``metrics`` maps names of :data:`ANCHOR_METRICS` to fractions; ``line`` is its line in
    the file."""

    model: str
    dataset: str
    seed_ratio: float
    setting: Setting
    metrics: Mapping[str, float]
    source: Source
    line: int

    @property
    def key(self) -> tuple[str, str, float, Setting]:
        return self.model, self.dataset, ratio_key(self.seed_ratio), self.setting


@dataclass(frozen=True)
class Published:
    """The parsed file: the protocol its figures use, its anchors (in file order) and the grid of pairs
    (``(dataset, seed_ratio)``, in file order) read in ``grid_setting``."""

    path: Path
    protocol: str
    anchors: tuple[Anchor, ...]
    grid: tuple[tuple[str, float], ...]
    grid_setting: Setting

    def anchor(self, model: str, dataset: str, seed_ratio: float, setting: Setting) -> Anchor | None:
        """The anchor of exactly this model, dataset, seed ratio and setting, or ``None``."""
        wanted = (model, dataset, ratio_key(seed_ratio), setting)
        return next((a for a in self.anchors if a.key == wanted), None)


class _Reader(YamlReader):
    """A :class:`YamlReader` that also reads an anchor's setting."""

    def setting(self, fields: Mapping[str, yaml.Node], what: str) -> Setting:
        return Setting(seeds=self.value(fields["seeds"], str, f"{what} seeds"),
                       names=self.value(fields["names"], bool, f"{what} names"),
                       images=self.value(fields["images"], bool, f"{what} images"),
                       iterative=self.value(fields["iterative"], bool, f"{what} iterative"))


def load_published(path: str | Path) -> Published:
    """Read and check ``path`` (see ``results/published.yaml``): every anchor names a known source, its metrics are
    fractions, and no two anchors share model, dataset, seed ratio and setting."""
    path = Path(path)
    reader = _Reader(path)
    root = reader.compose("the file of published figures",
                          fix_missing="pass --published with the path of results/published.yaml.")
    top = reader.mapping(root, "the file", ("protocol", "sources", "grid", "anchors"))
    protocol = reader.value(top["protocol"], str, "protocol")
    if not isinstance(top["sources"], yaml.MappingNode):
        raise reader.fail(top["sources"], "sources must be a mapping of keys to sources.", "see the file's header.")
    sources = {}
    for key, node in mapping_nodes(top["sources"]).items():
        fields = reader.mapping(node, f"source {key!r}", ("title", "where"))
        sources[key] = Source(key, reader.value(fields["title"], str, f"source {key!r} title"),
                              reader.value(fields["where"], str, f"source {key!r} where"))
    grid_fields = reader.mapping(top["grid"], "grid", ("setting", "pairs"))
    grid_setting = reader.setting(reader.mapping(grid_fields["setting"], "grid setting", _SETTING_FIELDS),
                                  "grid setting")
    if not isinstance(grid_fields["pairs"], yaml.SequenceNode) or not grid_fields["pairs"].value:
        raise reader.fail(grid_fields["pairs"], "grid pairs must be a non-empty list.",
                          "list '{dataset: ..., seed_ratio: ...}' entries.")
    grid = []
    for node in grid_fields["pairs"].value:
        fields = reader.mapping(node, "a grid pair", ("dataset", "seed_ratio"))
        pair = (reader.value(fields["dataset"], str, "dataset"),
                ratio_key(reader.value(fields["seed_ratio"], float, "seed_ratio")))
        if pair in grid:
            raise reader.fail(node, f"grid pair {pair} is listed twice.", "list each pair once.")
        grid.append(pair)
    if not isinstance(top["anchors"], yaml.SequenceNode):
        raise reader.fail(top["anchors"], "anchors must be a list.", "list one mapping per anchor.")
    anchors: list[Anchor] = []
    for node in top["anchors"].value:
        fields = reader.mapping(node, "an anchor", ("model", "dataset", "seed_ratio", *_SETTING_FIELDS, "source"),
                                ANCHOR_METRICS)
        source_key = reader.value(fields["source"], str, "source")
        if source_key not in sources:
            raise reader.fail(fields["source"], f"source {source_key!r} is not among sources {sorted(sources)}.",
                              "add it under sources or fix the key.")
        metrics = {m: reader.fraction(fields[m], m) for m in ANCHOR_METRICS if m in fields}
        if not metrics:
            raise reader.fail(node, "the anchor gives no metric.", f"give at least one of {', '.join(ANCHOR_METRICS)}.")
        anchor = Anchor(model=reader.value(fields["model"], str, "model"),
                        dataset=reader.value(fields["dataset"], str, "dataset"),
                        seed_ratio=reader.value(fields["seed_ratio"], float, "seed_ratio"),
                        setting=reader.setting(fields, "the anchor's"), metrics=metrics, source=sources[source_key],
                        line=node.start_mark.line + 1)
        twin = next((a for a in anchors if a.key == anchor.key), None)
        if twin is not None:
            raise reader.fail(node, f"a second anchor for {anchor.model} / {anchor.dataset} / {anchor.seed_ratio} / "
                              f"{anchor.setting.label} (the first is on line {twin.line}).",
                              "keep one anchor per model, dataset, seed ratio and setting.")
        anchors.append(anchor)
    return Published(path=path, protocol=protocol, anchors=tuple(anchors), grid=tuple(grid),
                     grid_setting=grid_setting)
