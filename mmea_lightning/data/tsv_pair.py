"""Your own pair: a folder of plain TSV files that name entities by URI, read into a :class:`KGPair`.

The folder (``dataset=tsv dataset.name=<name> dataset.path=<folder>``; the formats in ``docs/own_data.md``):

============================ ========== ===================================================================
file                         required   one line per record (UTF-8, tab-separated)
============================ ========== ===================================================================
``triples_1.tsv``            yes        ``head_uri<TAB>relation_uri<TAB>tail_uri`` -- the graph KG1 (source)
``triples_2.tsv``            yes        the same for KG2 (target)
``links.tsv``                yes        ``kg1_uri<TAB>kg2_uri`` -- the reference alignment (1-to-1)
``entities_<g>.tsv``         no         ``uri`` -- entities of graph ``g`` without any triple
``attributes_<g>.tsv``       no         ``uri<TAB>attribute[<TAB>value]`` -- the attribute modality (keys)
``numeric_<g>.tsv``          no         ``uri<TAB>attribute<TAB>value`` -- the numeric modality (numbers, dates)
``names_<g>.tsv``            no         ``uri<TAB>name`` -- surface names (used with ``surface=true``)
``images_<g>.npy``           no         a ``(K, d)`` float matrix (``numpy.save``) -- the image modality ...
``images_<g>_uris.tsv``      with npy   ... and its ``K`` URIs, line ``i`` naming row ``i``
============================ ========== ===================================================================

The loader assigns the ids: KG1's entities (every URI of ``triples_1.tsv`` and ``entities_1.tsv``) get
``0..N1-1`` in sorted URI order, KG2's ``N1..N-1``; relations are numbered in sorted URI order over both graphs
(one URI in both graphs is one relation). The same URI may name an entity of each graph: they are two entities.
An absent optional file is an absent modality (recorded in ``KGPair.notes``); lines of optional files whose URI is
no entity of their graph are skipped and recorded. Bad lines are :class:`DataFormatError` naming file, line and fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmea_lightning.data.checks import check_path_component, informative_images, settle_link_conflicts, warn
from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.data.pair import KGPair, has_edge
from mmea_lightning.data.readers import (
    name_from_uri,
    read_image_matrix,
    read_uri_attributes,
    read_uri_links,
    read_uri_list,
    read_uri_names,
    read_uri_numeric,
    read_uri_triples,
)

__all__ = ["TSV_FILES", "TsvPairSpec", "load_tsv_pair", "resolve_tsv_folder", "tsv_input_files"]

#: role -> file name inside the folder (the roles are ``KGPair.files``' and the run identity's data keys)
TSV_FILES: dict[str, str] = {
    "triples_1": "triples_1.tsv", "triples_2": "triples_2.tsv", "links": "links.tsv",
    **{f"{kind}_{g}": f"{kind}_{g}.tsv" for g in (1, 2) for kind in ("entities", "attributes", "numeric", "names")},
    **{f"images_{g}": f"images_{g}.npy" for g in (1, 2)},
    **{f"image_uris_{g}": f"images_{g}_uris.tsv" for g in (1, 2)},
}
REQUIRED: tuple[str, ...] = ("triples_1", "triples_2", "links")


@dataclass
class TsvPairSpec:
    """A user's pair of URI-keyed TSV files (``conf/dataset/tsv.yaml``).

    Attributes:
        name: the pair's name: it labels the run (``metrics.json`` ``run.dataset``, the run directory, the report)
            and names its feature cache files, so it must be one safe path component (``my_pair``).
        path: the folder holding the files, absolute or relative to the directory the command runs in. Not part of
            the run's identity: the files' content is (the same files elsewhere are the same run).
        format: ``tsv``.
        default_seed_ratio: share of the links used for training unless ``seed_ratio=`` says otherwise.
        seed_budget: pseudo seeds an unsupervised seed generator makes (``seeds=psqe`` / ``pivot``).
        names_from_uri: where ``names_<g>.tsv`` gives no name, use the URI's readable local name
            (``http://dbpedia.org/resource/Rebecca_Hall`` -> ``Rebecca Hall``). Off by default: without name files
            the name modality is absent.
        gold_one_to_one: ``links.tsv`` must be 1-to-1 (an entity linked twice is an error naming both lines);
            ``false`` keeps such links, each recorded in the notes.
        expected_counts: optional ``kg1_entities`` / ``kg2_entities`` / ``kg1_triples`` / ``kg2_triples`` /
            ``gold_links``; a mismatch is logged.
    """

    name: str
    path: str
    format: str = "tsv"
    default_seed_ratio: float = 0.3
    seed_budget: int = 1000
    names_from_uri: bool = False
    gold_one_to_one: bool = True
    expected_counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_path_component(self.name, "dataset.name")
        if self.format != "tsv":
            raise ValueError(f"dataset.format={self.format!r}: a TsvPairSpec reads format 'tsv'.")
        if not isinstance(self.path, (str, Path)) or str(self.path).strip() in ("", "???"):
            raise ValueError("dataset.path is not set: pass the folder of your pair's TSV files, e.g. "
                             "dataset=tsv dataset.name=my_pair dataset.path=/abs/path/to/my_pair (docs/own_data.md).")

    @classmethod
    def from_config(cls, cfg: Mapping) -> TsvPairSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"dataset config (format tsv) has unknown keys {unknown}; known keys: {sorted(known)} "
                             "(the file names are fixed: docs/own_data.md).")
        return cls(**{k: (dict(v) if k == "expected_counts" else v) for k, v in cfg.items()})


def resolve_tsv_folder(spec: TsvPairSpec) -> Path:
    """The pair's folder; a :class:`DataFormatError` listing every missing required file when it is incomplete."""
    return _check_folder(Path(str(spec.path)).expanduser(), spec.name)


def _check_folder(folder: Path, name: str) -> Path:
    if not folder.is_dir():
        raise DataFormatError(folder, f"the folder of dataset {name!r} does not exist or is not a folder.",
                              fix="pass dataset.path=<the folder holding triples_1.tsv, triples_2.tsv and "
                              "links.tsv> (an absolute path is safest).")
    missing = [TSV_FILES[role] for role in REQUIRED if not (folder / TSV_FILES[role]).is_file()]
    if missing:
        raise DataFormatError(folder, f"required file(s) {', '.join(missing)} missing in the folder of dataset "
                              f"{name!r}.", fix="every pair needs triples_1.tsv, triples_2.tsv (head_uri<TAB>"
                              "relation_uri<TAB>tail_uri) and links.tsv (kg1_uri<TAB>kg2_uri); see docs/own_data.md.")
    return folder


def tsv_input_files(folder: str | Path) -> dict[str, Path]:
    """Every file a TSV pair may read, by role (present or not: a file that appears changes the fingerprint)."""
    return {role: Path(folder) / name for role, name in TSV_FILES.items()}


def _note_skipped(notes: list[str], path: Path, skipped: list[int], graph: int) -> None:
    if skipped:
        notes.append(f"{path.name}: {len(skipped)} line(s) skipped, their URI is no entity of KG{graph} (in no "
                     f"triple of triples_{graph}.tsv nor in entities_{graph}.tsv), e.g. line {skipped[0]}")


def load_tsv_pair(spec: TsvPairSpec, folder: str | Path) -> KGPair:
    """Read and validate the TSV files of ``spec`` in ``folder`` (see the module docstring)."""
    folder = _check_folder(Path(folder), spec.name)
    files: dict[str, str] = {}
    notes: list[str] = []

    def present(role: str) -> Path | None:
        path = folder / TSV_FILES[role]
        if path.is_file():
            files[role] = str(path)
            return path
        return None

    triples_text = [read_uri_triples(present(f"triples_{g}")) for g in (1, 2)]
    graph_uris: list[list[str]] = []
    for g, rows in zip((1, 2), triples_text, strict=True):
        members = {uri for head, _, tail in rows for uri in (head, tail)}
        entities = present(f"entities_{g}")
        if entities is not None:
            members.update(uri for _, uri in read_uri_list(entities, "entity URI"))
        graph_uris.append(sorted(members))
    uris = graph_uris[0] + graph_uris[1]
    num1 = len(graph_uris[0])
    index = [{uri: k for k, uri in enumerate(graph_uris[0])},
             {uri: num1 + k for k, uri in enumerate(graph_uris[1])}]
    relations = {r: k for k, r in enumerate(sorted({rel for rows in triples_text for _, rel, _ in rows}))}
    triples = [np.asarray([(index[g][h], relations[r], index[g][t]) for h, r, t in rows], dtype=np.int64)
               for g, rows in enumerate(triples_text)]
    for g, graph in enumerate(triples, start=1):
        if not has_edge(graph):
            warn(notes, f"{folder / TSV_FILES[f'triples_{g}']}: no edge between two different entities (self-loops "
                        "only): the graph has no structure, so structure is reported absent")

    conflicts: list[DataFormatError] = []
    links = read_uri_links(present("links"), index[0], index[1],
                           sources=("triples_1.tsv" + (" nor entities_1.tsv" if "entities_1" in files else ""),
                                    "triples_2.tsv" + (" nor entities_2.tsv" if "entities_2" in files else "")),
                           conflicts=conflicts)
    settle_link_conflicts(conflicts, spec.gold_one_to_one, notes, "links not 1-to-1, kept (gold_one_to_one: false)")

    attribute_keys: list[tuple[int, str]] = []
    numeric_rows: list[tuple[int, str, float]] = []
    names: list[str | None] = [name_from_uri(uri) if spec.names_from_uri else None for uri in uris]
    images: dict[int, np.ndarray] = {}
    image_files: list[Path] = []
    for g in (1, 2):
        graph_index = index[g - 1]
        if (path := present(f"attributes_{g}")) is not None:
            pairs, skipped = read_uri_attributes(path, graph_index)
            attribute_keys.extend(pairs)
            _note_skipped(notes, path, skipped, g)
        else:
            notes.append(f"attributes_{g}.tsv absent: no attribute keys for KG{g}")
        if (path := present(f"numeric_{g}")) is not None:
            rows, skipped = read_uri_numeric(path, graph_index)
            numeric_rows.extend(rows)
            _note_skipped(notes, path, skipped, g)
        else:
            notes.append(f"numeric_{g}.tsv absent: no numeric values for KG{g}")
        if (path := present(f"names_{g}")) is not None:
            given, skipped = read_uri_names(path, graph_index)
            for ent, name in given.items():
                names[ent] = name
            _note_skipped(notes, path, skipped, g)
        else:
            notes.append(f"names_{g}.tsv absent: no names for KG{g}"
                         + (" other than the URIs' local names" if spec.names_from_uri else ""))
        matrix, uri_list = present(f"images_{g}"), present(f"image_uris_{g}")
        if (matrix is None) != (uri_list is None):
            there, missing = (matrix, TSV_FILES[f"image_uris_{g}"]) if matrix else (uri_list, TSV_FILES[f"images_{g}"])
            raise DataFormatError(there, f"has no companion {missing}: an image matrix needs its URI list (line i "
                                  "names row i) and a URI list needs its matrix.",
                                  fix=f"add {missing}, or remove {there.name} to run without KG{g}'s images.")
        if matrix is not None:
            vectors, skipped = read_image_matrix(matrix, uri_list, graph_index)
            dims = {vec.shape[0] for vec in images.values()}
            if vectors and dims and next(iter(vectors.values())).shape[0] not in dims:
                raise DataFormatError(matrix, f"has {next(iter(vectors.values())).shape[0]} columns, images_1.npy "
                                      f"{dims.pop()}: both graphs' image vectors must have one length.",
                                      fix="extract both graphs' image features with the same model.")
            images.update(vectors)
            image_files.append(matrix)
            _note_skipped(notes, uri_list, skipped, g)
    image_features = None
    if images:
        image_features = informative_images(dict(sorted(images.items())), image_files[0].parent / "images_*.npy",
                                            notes)
    else:
        notes.append("no image features: the visual modality is absent")

    pair = KGPair.from_records(
        name=spec.name, uris=uris, kg1_ids=np.arange(num1), kg2_ids=np.arange(num1, len(uris)),
        triples1=triples[0], triples2=triples[1], gold_links=links, attribute_keys=attribute_keys,
        numeric_rows=numeric_rows, names=names, image_features=image_features, files=files, notes=notes)
    counts = pair.counts()
    mismatched = {k: (counts[k], v) for k, v in spec.expected_counts.items() if counts.get(k) != v}
    if mismatched:
        warn(notes, f"dataset {spec.name}: counts differ from expected_counts (found, expected): {mismatched}")
    return pair
