"""From a dataset config (``conf/dataset/*.yaml``) and a data root to a validated :class:`KGPair`.

Two file layouts (``dataset.format``): ``mmkg`` (default), the benchmark releases' id-keyed files under a data root
(:class:`DatasetSpec`), and ``tsv``, a user's own folder of URI-keyed TSV files whose ids the loader assigns
(:class:`~mmea_lightning.data.tsv_pair.TsvPairSpec`). :meth:`DatasetSpec.from_config`, :func:`resolve_root` and
:func:`load_pair` take either.

Refused with a :class:`DataFormatError` (file, line, fix): anything the readers refuse (:mod:`.readers`), colliding
or non-contiguous entity ids, a gold alignment that is not 1-to-1 (see ``DatasetSpec.gold_one_to_one``). Accepted
with a warning that is logged *and* recorded in ``KGPair.notes`` (they reach ``metrics.json``): a graph whose
triples are all self-loops (structure absent), all-zero image vectors (those entities have no image), image vectors
that are all zero or identical (images absent), a published release's many-to-one gold links. Relation ids are
remapped to a dense range (``KGPair.relation_ids`` keeps the file's ids). Dataset names and paths are checked on
:class:`DatasetSpec` construction (``ValueError``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmea_lightning.data.checks import (
    check_path_component,
    check_relative_path,
    informative_images,
    settle_link_conflicts,
    warn,
)
from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.data.pair import KGPair, has_edge
from mmea_lightning.data.readers import (
    name_from_uri,
    read_attribute_keys,
    read_entity_ids,
    read_image_features,
    read_links,
    read_mid2name,
    read_numeric_triples,
    read_translated_names,
    read_triples,
)
from mmea_lightning.data.tsv_pair import TsvPairSpec, load_tsv_pair, resolve_tsv_folder

__all__ = ["DATASET_FORMATS", "DatasetSpec", "PairSpec", "check_path_component", "check_relative_path",
           "informative_images", "load_pair", "resolve_root"]

log = logging.getLogger(__name__)

#: ``dataset.format`` values: the benchmark layout and a user's own TSV folder
DATASET_FORMATS = ("mmkg", "tsv")


@dataclass
class DatasetSpec:
    """Where the files of one benchmark pair are, relative to the data root.

    Names and paths are checked on construction (``ValueError`` naming the key and the fix): ``name`` becomes part
    of cache file names, so it must be one safe path component; every file path is relative to the data root,
    without ``..``.

    Attributes:
        name: the dataset's name (the config file's name).
        folder: the pair's folder (``ent_ids_*``, ``triples_*``, ``ill_ent_ids``, ``training_attrs_*``).
        default_seed_ratio: the share of gold links used for training in the published protocol.
        seed_budget: the number of pseudo seeds a generator makes on this pair (PSQE's ``n``: 1000, 5000 on
            DWY15K as in the PSQE paper); the seed configs read it as ``dataset.seed_budget``.
        attributes: attribute-key files inside ``folder``; a missing one is recorded, not an error.
        numeric: numeric-triple files relative to the root (mmkb); a missing one is recorded.
        names_json: DBP15K translated-name JSON relative to the root, or ``None``.
        mid2name: mmkb ``FB15K_mid2name.txt`` relative to the root, or ``None``.
        names_from_uri: fall back on the URI's local name where it is readable.
        images: image-feature pickle relative to the root; when absent the visual modality is absent.
        generator: ``"toy"`` for the embedded default pair, generated into the root when missing.
        expected_counts: the release's entity/triple/link counts (checked by the tests, logged on mismatch).
        gold_one_to_one: ``ill_ent_ids`` must be 1-to-1. ``True``: an entity linked twice is a
            :class:`DataFormatError` naming both lines. ``False``: such links are kept as published, each logged
            and recorded in the pair's notes; the split keeps the links that share an entity on one side
            (:func:`~mmea_lightning.data.splits.split_links`). Default ``True``; ``conf/dataset/fbdb15k.yaml`` sets
            ``false``: the published release links 4 DB15K entities to two FB15K entities each, and the published
            code keeps them.
    """

    name: str
    folder: str
    default_seed_ratio: float = 0.3
    seed_budget: int = 1000
    attributes: Sequence[str] = ("training_attrs_1", "training_attrs_2")
    numeric: Sequence[str] = ()
    names_json: str | None = None
    mid2name: str | None = None
    names_from_uri: bool = True
    images: str | None = None
    generator: str | None = None
    expected_counts: Mapping[str, int] = field(default_factory=dict)
    gold_one_to_one: bool = True
    format: str = "mmkg"

    def __post_init__(self) -> None:
        """Names that become path parts are single safe components; file paths stay under the data root."""
        if self.format != "mmkg":
            raise ValueError(f"dataset.format={self.format!r}: a DatasetSpec reads the 'mmkg' layout.")
        check_path_component(self.name, "dataset.name")
        check_relative_path(self.folder, "dataset.folder")
        for key in ("attributes", "numeric"):
            for value in getattr(self, key):
                check_relative_path(value, f"dataset.{key}")
        for key in ("names_json", "mid2name", "images"):
            if getattr(self, key) is not None:
                check_relative_path(getattr(self, key), f"dataset.{key}")

    @classmethod
    def from_config(cls, cfg: Mapping) -> PairSpec:
        """The spec of a ``conf/dataset`` mapping: a :class:`TsvPairSpec` for ``format: tsv``, else this class."""
        layout = cfg.get("format", "mmkg")
        if layout not in DATASET_FORMATS:
            raise ValueError(f"dataset.format={layout!r} is unknown: use mmkg (the benchmark layout, the default) or "
                             "tsv (your own folder of URI-keyed TSV files, docs/own_data.md).")
        if layout == "tsv":
            return TsvPairSpec.from_config(cfg)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"dataset config has unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**{k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
                      for k, v in cfg.items()})


#: what :meth:`DatasetSpec.from_config` returns: the spec of either layout
PairSpec = DatasetSpec | TsvPairSpec


def resolve_root(spec: PairSpec, data_dir: str | Path | None, cache_dir: str | Path | None) -> Path:
    """The data root of ``spec``: the generated toy root, or ``data_dir`` (which must then be given); for a TSV pair,
    its folder (``dataset.path``; ``data_dir`` is not used).

    Nothing is ever written into ``data_dir``. The toy pair is generated only under ``<cache_dir>/toy``, a folder the
    framework owns; a ``data_dir`` is used for the toy dataset only when it already holds a complete toy pair (e.g. a
    copy a user altered on purpose), and is then only read.
    """
    if isinstance(spec, TsvPairSpec):
        return resolve_tsv_folder(spec)
    if spec.generator == "toy":
        from mmea_lightning.data.toy import generate_toy_pair

        if data_dir and (Path(data_dir).expanduser() / spec.folder / "ill_ent_ids").is_file():
            return Path(data_dir).expanduser()
        root = Path(cache_dir or ".cache") / "toy"
        if data_dir:
            log.info("dataset %s is generated: data_dir=%s holds no toy pair and is not used; generating under %s",
                     spec.name, data_dir, root)
        if not (root / spec.folder / "ill_ent_ids").is_file():
            generate_toy_pair(root)
        return root
    if spec.generator is not None:
        raise ValueError(f"dataset {spec.name!r}: unknown generator {spec.generator!r} (known: 'toy').")
    if not data_dir:
        raise ValueError(
            f"dataset {spec.name!r} reads real data: pass data_dir=<mmkg root> (e.g. data_dir=/path/to/mmkg) "
            "or set MMEA_DATA_DIR; README.md, section 'Data', says where to download the release."
        )
    root = Path(data_dir).expanduser()
    if not (root / spec.folder).is_dir():
        raise DataFormatError(root / spec.folder, f"dataset folder of {spec.name!r} not found under data_dir.",
                              fix=f"point data_dir at the mmkg root that holds '{spec.folder}'.")
    return root


def load_pair(spec: PairSpec, root: str | Path) -> KGPair:
    """Read and validate every file of ``spec`` under ``root`` (:func:`resolve_root`)."""
    if isinstance(spec, TsvPairSpec):
        return load_tsv_pair(spec, root)
    root = Path(root)
    folder = root / spec.folder
    files: dict[str, str] = {}
    notes: list[str] = []

    ids1, uris1 = read_entity_ids(folder / "ent_ids_1")
    ids2, uris2 = read_entity_ids(folder / "ent_ids_2")
    files.update(ent_ids_1=str(folder / "ent_ids_1"), ent_ids_2=str(folder / "ent_ids_2"))
    all_ids = np.concatenate([ids1, ids2])
    num_entities = len(all_ids)
    if np.intersect1d(ids1, ids2).size:
        clash = int(np.intersect1d(ids1, ids2)[0])
        raise DataFormatError(folder / "ent_ids_2", f"entity id {clash} is also used in ent_ids_1.",
                              fix="ids are global across the pair: KG1 and KG2 ids must not collide.")
    if all_ids.min() != 0 or all_ids.max() != num_entities - 1:
        raise DataFormatError(folder / "ent_ids_2", f"entity ids of the pair are not contiguous 0..{num_entities - 1} "
                              f"(found {all_ids.min()}..{all_ids.max()}).",
                              fix="renumber the entities of both graphs as one range starting at 0.")
    uris: list[str] = [""] * num_entities
    for ent, uri in zip(all_ids.tolist(), uris1 + uris2):
        uris[ent] = uri
    uri_to_id = {uri: ent for ent, uri in enumerate(uris)}
    if len(uri_to_id) != num_entities:
        notes.append("some URIs are shared by several ids; URI-keyed files map to the last of them")

    triples1 = read_triples(folder / "triples_1", ids1, num_entities)
    triples2 = read_triples(folder / "triples_2", ids2, num_entities)
    files.update(triples_1=str(folder / "triples_1"), triples_2=str(folder / "triples_2"))
    for name, triples in (("triples_1", triples1), ("triples_2", triples2)):
        if not has_edge(triples):
            warn(notes, f"{folder / name}: no edge between two different entities (self-loops only): the graph "
                         "has no structure, so structure is reported absent")
    conflicts: list[DataFormatError] = []
    links = read_links(folder / "ill_ent_ids", ids1, ids2, num_entities, conflicts=conflicts)
    files["ill_ent_ids"] = str(folder / "ill_ent_ids")
    settle_link_conflicts(conflicts, spec.gold_one_to_one, notes, "gold links not 1-to-1, kept as published")
    attr_pairs: list[tuple[int, str]] = []
    for name in spec.attributes:
        path = folder / name
        if not path.is_file():
            notes.append(f"attribute file {name} absent")
            continue
        pairs, skipped = read_attribute_keys(path, uri_to_id)
        attr_pairs.extend(pairs)
        files[f"attributes:{name}"] = str(path)
        if skipped:
            notes.append(f"{name}: {skipped} lines skipped (URI not in the pair)")

    numeric_rows: list[tuple[int, str, float]] = []
    for rel in spec.numeric:
        path = root / rel
        if not path.is_file():
            notes.append(f"numeric file {rel} absent")
            continue
        rows, skipped = read_numeric_triples(path, uri_to_id)
        numeric_rows.extend(rows)
        files[f"numeric:{rel}"] = str(path)
        if skipped:
            notes.append(f"{rel}: {skipped} lines skipped (URI not in the pair)")

    names: list[str | None] = [None] * num_entities
    if spec.names_from_uri:
        names = [name_from_uri(uri) for uri in uris]
    # Name files are optional, like images: names only matter with surface=true, and an aligner asked for a name
    # modality the pair lacks drops it and records that (strict_modalities=true makes it an error).
    if spec.mid2name and not (root / spec.mid2name).is_file():
        notes.append(f"name file {spec.mid2name} absent: no names from it")
    elif spec.mid2name:
        for ent, name in read_mid2name(root / spec.mid2name, uri_to_id).items():
            names[ent] = name
        files["mid2name"] = str(root / spec.mid2name)
    if spec.names_json and not (root / spec.names_json).is_file():
        notes.append(f"name file {spec.names_json} absent: no names from it")
    elif spec.names_json:
        for ent, name in read_translated_names(root / spec.names_json, num_entities).items():
            names[ent] = name
        files["names_json"] = str(root / spec.names_json)

    image_features = None
    if spec.images and (root / spec.images).is_file():
        image_features = informative_images(read_image_features(root / spec.images, num_entities),
                                            root / spec.images, notes)
        files["images"] = str(root / spec.images)
    else:
        notes.append("no image features: the visual modality is absent")

    pair = KGPair.from_records(
        name=spec.name, uris=uris, kg1_ids=ids1, kg2_ids=ids2, triples1=triples1, triples2=triples2,
        gold_links=links, attribute_keys=attr_pairs, numeric_rows=numeric_rows, names=names,
        image_features=image_features, files=files, notes=notes)
    counts = pair.counts()
    mismatched = {k: (counts[k], v) for k, v in spec.expected_counts.items() if counts.get(k) != v}
    if mismatched:
        log.warning("dataset %s: counts differ from the published table (found, expected): %s", spec.name, mismatched)
    return pair
