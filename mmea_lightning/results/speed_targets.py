"""Speed targets as data: the targets of ``results/speed_targets.yaml`` (each with its source, the benchmark figure it
reads and its bound) and their check against the committed benchmark files (:mod:`.speed`).

A target reads one figure (``measured``: a field of the one row of ``bench_aligners`` or ``bench_eval`` output that
matches its model, dataset and, optionally, evaluation path and Hydra override) and bounds it from above
(``at_most``): by a number, or by ``factor`` x ``of``, where ``of`` is a number (a reference figure, described by
``of_what``) or another measured figure. Every mistake in the file is a
:class:`~mmea_lightning.data.errors.DataFormatError` naming the file, the line and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.results.published import Source
from mmea_lightning.results.yaml_reader import YamlReader, mapping_nodes

__all__ = ["BENCHMARK_FIELDS", "Bound", "Measure", "SpeedTarget", "SpeedTargets", "TargetResult", "check_targets",
           "load_speed_targets"]

#: the figures a target may read, per benchmark (fields of its JSON rows)
BENCHMARK_FIELDS: Mapping[str, tuple[str, ...]] = {
    "bench_aligners": ("load_s", "s_per_epoch", "cpu_s_per_epoch", "epoch_s_min", "epoch_s_max", "val_s",
                       "val_ckpt_s", "test_s", "projected_min", "peak_rss_gib"),
    "bench_eval": ("eval_s", "eval_cpu_s", "forward_s", "peak_rss_mib", "eval_extra_mib"),
}
#: the evaluation paths of ``bench_eval`` rows
EVAL_PATHS: tuple[str, ...] = ("shared", "per_protocol")


@dataclass(frozen=True)
class Measure:
    """One measured figure: ``field`` of the ``benchmark`` row of ``model`` on ``dataset`` (``path``: the evaluation
    path of a ``bench_eval`` row; ``override``: a Hydra override the row's ``overrides`` must hold)."""

    benchmark: str
    model: str
    dataset: str
    field: str
    path: str | None = None
    override: str | None = None
    line: int | None = None

    @property
    def label(self) -> str:
        """E.g. ``bench_aligners: eva / dbp15k_zh_en (experiment=eva_structure) s_per_epoch``."""
        extra = [x for x in (self.path, self.override) if x]
        return (f"{self.benchmark}: {self.model} / {self.dataset}" + (f" ({', '.join(extra)})" if extra else "")
                + f" `{self.field}`")

    def matches(self, row: Mapping) -> bool:
        return (row.get("model") == self.model and row.get("dataset") == self.dataset
                and (self.path is None or row.get("path") == self.path)
                and (self.override is None or self.override in (row.get("overrides") or ())))


@dataclass(frozen=True)
class Bound:
    """``at_most``: ``factor`` x ``of`` (a number, or a measured figure); a plain number is ``factor`` 1 of it."""

    factor: float
    of: float | Measure
    of_what: str | None = None


@dataclass(frozen=True)
class SpeedTarget:
    """One target: its name, what it says, its source, the figure it reads (in ``unit``) and its bound."""

    name: str
    what: str
    source: Source
    measured: Measure
    unit: str
    bound: Bound
    line: int


@dataclass(frozen=True)
class SpeedTargets:
    path: Path
    targets: tuple[SpeedTarget, ...]


@dataclass(frozen=True)
class TargetResult:
    """A target checked against the benchmark rows: the measured value, the bound's value (``None`` where a figure
    is not measured) and ``met`` (``None``: not measured)."""

    target: SpeedTarget
    value: float | None
    limit: float | None
    reference: float | None
    met: bool | None


_MEASURE_KEYS = ("benchmark", "model", "dataset", "field")
_FIX = "see the header of results/speed_targets.yaml."


def _measure(reader: YamlReader, node: yaml.Node, what: str) -> Measure:
    fields = reader.mapping(node, what, _MEASURE_KEYS, ("path", "override"))
    benchmark = reader.value(fields["benchmark"], str, f"{what} benchmark")
    if benchmark not in BENCHMARK_FIELDS:
        raise reader.fail(fields["benchmark"], f"{what} benchmark {benchmark!r} is unknown.",
                          f"use one of {', '.join(BENCHMARK_FIELDS)}.")
    field = reader.value(fields["field"], str, f"{what} field")
    if field not in BENCHMARK_FIELDS[benchmark]:
        raise reader.fail(fields["field"], f"{what} field {field!r} is not a figure of {benchmark}.",
                          f"use one of {', '.join(BENCHMARK_FIELDS[benchmark])}.")
    path = reader.value(fields["path"], str, f"{what} path") if "path" in fields else None
    if path is not None and (benchmark != "bench_eval" or path not in EVAL_PATHS):
        raise reader.fail(fields["path"], f"{what} path {path!r} is not an evaluation path of {benchmark}.",
                          f"give path ({' or '.join(EVAL_PATHS)}) only with benchmark bench_eval.")
    if benchmark == "bench_eval" and path is None:
        raise reader.fail(node, f"{what} reads bench_eval but gives no path.",
                          f"add path: {' or '.join(EVAL_PATHS)}.")
    return Measure(benchmark=benchmark, model=reader.value(fields["model"], str, f"{what} model"),
                   dataset=reader.value(fields["dataset"], str, f"{what} dataset"), field=field, path=path,
                   override=reader.value(fields["override"], str, f"{what} override") if "override" in fields else None,
                   line=node.start_mark.line + 1)


def _positive(reader: YamlReader, node: yaml.Node, what: str) -> float:
    value = reader.value(node, float, what)
    if not value > 0:
        raise reader.fail(node, f"{what} is {value}, not a positive number.", f"give {what} as a positive number.")
    return value


def _bound(reader: YamlReader, node: yaml.Node) -> Bound:
    if isinstance(node, yaml.ScalarNode):
        return Bound(factor=1.0, of=_positive(reader, node, "at_most"))
    fields = reader.mapping(node, "at_most", ("factor", "of"), ("of_what",))
    factor = _positive(reader, fields["factor"], "at_most factor")
    if isinstance(fields["of"], yaml.MappingNode):
        return Bound(factor=factor, of=_measure(reader, fields["of"], "at_most of"))
    if "of_what" not in fields:
        raise reader.fail(node, "at_most of is a number without of_what.",
                          "say in of_what what the reference figure is (e.g. the public code's s/epoch).")
    return Bound(factor=factor, of=_positive(reader, fields["of"], "at_most of"),
                 of_what=reader.value(fields["of_what"], str, "at_most of_what"))


def load_speed_targets(path: str | Path) -> SpeedTargets:
    """Read and check ``path`` (see ``results/speed_targets.yaml``): every target names a known source, reads a
    known figure of a known benchmark, has a positive bound and a name no other target has."""
    path = Path(path)
    reader = YamlReader(path)
    root = reader.compose("the file of speed targets",
                          fix_missing="pass --speed-targets with the path of results/speed_targets.yaml.")
    top = reader.mapping(root, "the file", ("sources", "targets"))
    if not isinstance(top["sources"], yaml.MappingNode):
        raise reader.fail(top["sources"], "sources must be a mapping of keys to sources.", _FIX)
    sources = {}
    for key, node in mapping_nodes(top["sources"]).items():
        fields = reader.mapping(node, f"source {key!r}", ("title", "where"))
        sources[key] = Source(key, reader.value(fields["title"], str, f"source {key!r} title"),
                              reader.value(fields["where"], str, f"source {key!r} where"))
    if not isinstance(top["targets"], yaml.SequenceNode) or not top["targets"].value:
        raise reader.fail(top["targets"], "targets must be a non-empty list.", "list one mapping per target.")
    targets: list[SpeedTarget] = []
    for node in top["targets"].value:
        fields = reader.mapping(node, "a target", ("name", "what", "source", "measured", "unit", "at_most"))
        source_key = reader.value(fields["source"], str, "source")
        if source_key not in sources:
            raise reader.fail(fields["source"], f"source {source_key!r} is not among sources {sorted(sources)}.",
                              "add it under sources or fix the key.")
        target = SpeedTarget(name=reader.value(fields["name"], str, "name"),
                             what=reader.value(fields["what"], str, "what"), source=sources[source_key],
                             measured=_measure(reader, fields["measured"], "measured"),
                             unit=reader.value(fields["unit"], str, "unit"), bound=_bound(reader, fields["at_most"]),
                             line=node.start_mark.line + 1)
        twin = next((t for t in targets if t.name == target.name), None)
        if twin is not None:
            raise reader.fail(node, f"a second target named {target.name!r} (the first is on line {twin.line}).",
                              "give every target its own name.")
        targets.append(target)
    return SpeedTargets(path=path, targets=tuple(targets))


def _lookup(measure: Measure, rows: Mapping[str, Sequence[Mapping]], path: Path) -> float | None:
    found = [row for row in rows.get(measure.benchmark, ()) if measure.matches(row)]
    if len(found) > 1:
        files = ", ".join(str(row.get("file", "?")) for row in found)
        raise DataFormatError(path, f"{measure.label} matches {len(found)} benchmark rows ({files}).",
                              line=measure.line, fix="add an override (or path) that selects one row.")
    value = found[0].get(measure.field) if found else None
    return None if value is None else float(value)


def check_targets(targets: SpeedTargets, rows: Mapping[str, Sequence[Mapping]]) -> list[TargetResult]:
    """Every target (file order) against ``rows`` (benchmark name -> its rows, each with its ``file``)."""
    results = []
    for target in targets.targets:
        value = _lookup(target.measured, rows, targets.path)
        bound = target.bound
        reference = (_lookup(bound.of, rows, targets.path) if isinstance(bound.of, Measure) else bound.of)
        limit = None if reference is None else bound.factor * reference
        met = None if value is None or limit is None else value <= limit
        results.append(TargetResult(target=target, value=value, limit=limit, reference=reference, met=met))
    return results
