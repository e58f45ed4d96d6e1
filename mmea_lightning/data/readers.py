"""Readers for every file of the ``mmkg`` layout (the formats: ``docs/configuration.md``, section ``dataset``) and of
a user's own pair of URI-keyed TSV files (the formats: ``docs/own_data.md``; :mod:`mmea_lightning.data.tsv_pair`).

Each reader validates strictly: a malformed line, an id outside the entity files, a duplicate gold link, an
entity linked twice (the gold alignment is 1-to-1) or a missing file raise :class:`DataFormatError` naming the
file, the line and the fix.

Text files are UTF-8 (a leading byte-order mark is ignored); other bytes are a :class:`DataFormatError` naming the
line. Image feature pickles are never passed to ``pickle.load``: a restricted unpickler builds only plain containers,
numbers and numpy arrays, and refuses any other global (which could run code) with a :class:`DataFormatError`.
"""

from __future__ import annotations

import codecs
import importlib
import json
import math
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmea_lightning.data.errors import DataFormatError

_DATE = re.compile(r"^(-?[0-9][0-9#]{0,5})-([0-9#]{1,2})-([0-9#]{1,2})(?:[T ].*)?$")


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataFormatError(
            path,
            f"{what} file is missing.",
            fix="check data_dir (it must point at the mmkg root holding this dataset's folder) "
            "or download the benchmark release described in README.md (section 'Data').",
        )
    return path


def _not_utf8(path: Path) -> DataFormatError:
    """The error for a file that is not UTF-8: the line and byte of the first invalid sequence, and the fix."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return DataFormatError(path, f"byte 0x{data[err.start]:02x} (byte {column} of the line) is not valid UTF-8 "
                               f"({err.reason}).", line=line,
                               fix="re-save the file as UTF-8 (e.g. iconv -f <its encoding> -t UTF-8).")
    return DataFormatError(path, "is not valid UTF-8.", fix="re-save the file as UTF-8.")


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, tab_fields)`` for each non-empty line (1-based numbers).

    Files are UTF-8; a leading byte-order mark is dropped (it would otherwise stick to the first line's first field).
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\n").rstrip("\r")
                if line.strip():
                    yield number, line.split("\t")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _int(path: Path, number: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataFormatError(path, f"{what} {text!r} is not an integer.", line=number,
                              fix="every id column must be a base-10 integer.") from None


def read_entity_ids(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """``id<TAB>uri`` lines -> ``(ids (E,), uris)`` in file order."""
    path = _require(Path(path), "entity id")
    ids: list[int] = []
    uris: list[str] = []
    seen: dict[int, int] = {}
    for number, fields in _lines(path):
        if len(fields) != 2:
            raise DataFormatError(path, f"expected 2 tab-separated fields (id, uri), found {len(fields)}.",
                                  line=number, fix="write one 'id<TAB>uri' record per line.")
        ent = _int(path, number, fields[0], "entity id")
        if ent in seen:
            raise DataFormatError(path, f"entity id {ent} already defined on line {seen[ent]}.", line=number,
                                  fix="give every entity one unique id.")
        seen[ent] = number
        ids.append(ent)
        uris.append(fields[1])
    if not ids:
        raise DataFormatError(path, "no entities.", fix="the entity file must list at least one entity.")
    return np.asarray(ids, dtype=np.int64), uris


def read_triples(path: str | Path, valid_ids: np.ndarray, num_entities: int) -> np.ndarray:
    """``head<TAB>relation<TAB>tail`` -> ``(T, 3)``; heads/tails must belong to ``valid_ids`` (this graph).

    A file without any triple is a :class:`DataFormatError`, not a warning: every aligner here propagates over the
    graph, and a benchmark graph without a single triple is a broken download or conversion -- reporting its
    structure (or running structure-based aligners on it) would be a silently wrong result.
    """
    path = _require(Path(path), "triple")
    valid = np.zeros(num_entities, dtype=bool)
    valid[valid_ids] = True
    rows: list[tuple[int, int, int]] = []
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise DataFormatError(path, f"expected 3 tab-separated fields (head, relation, tail), found "
                                  f"{len(fields)}.", line=number, fix="write 'head<TAB>relation<TAB>tail' ids.")
        h, r, t = (_int(path, number, f, what) for f, what in zip(fields, ("head", "relation", "tail")))
        for ent, role in ((h, "head"), (t, "tail")):
            if not (0 <= ent < num_entities and valid[ent]):
                raise DataFormatError(path, f"{role} id {ent} is not an entity of this graph's ent_ids file.",
                                      line=number, fix="use ids defined in the matching ent_ids_* file.")
        if r < 0:
            raise DataFormatError(path, f"relation id {r} is negative.", line=number,
                                  fix="relation ids are non-negative integers.")
        rows.append((h, r, t))
    if not rows:
        raise DataFormatError(path, "no triples: this graph has no edge, so its structure (which every aligner "
                              "uses) is missing.",
                              fix="re-create the file from the benchmark release (one 'head<TAB>relation<TAB>tail' "
                              "line per triple); both graphs of a pair need relation triples.")
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


class _OneToOneLinks:
    """Collects gold links line by line: refuses a repeated link and records every entity linked twice.

    An entity linked twice breaks the 1-to-1 gold alignment (the error names both lines); with a ``conflicts`` list
    such links are kept and their errors appended there, else the first one is raised.
    """

    def __init__(self, path: Path, conflicts: list[DataFormatError] | None):
        self.path = path
        self.conflicts = conflicts
        self.seen: dict[tuple[int, int], int] = {}
        self.left: dict[int, tuple[int, str]] = {}  # kg1 id -> (line, kg2 entity as shown) of its link
        self.right: dict[int, tuple[int, str]] = {}  # kg2 id -> (line, kg1 entity as shown)
        self.rows: list[tuple[int, int]] = []

    def add(self, number: int, a: int, b: int, shown: tuple[str, str] | None = None) -> None:
        """Add the link ``(a, b)`` of line ``number``; ``shown`` names the two entities in messages (ids if None)."""
        shown_a, shown_b = shown or (str(a), str(b))
        if (a, b) in self.seen:
            raise DataFormatError(self.path, f"duplicate gold link ({shown_a}, {shown_b}), first on line "
                                  f"{self.seen[(a, b)]}.", line=number, fix="remove the repeated line.")
        for ent, shown_ent, shown_other, taken, side_name in ((a, shown_a, shown_b, self.left, "KG1"),
                                                              (b, shown_b, shown_a, self.right, "KG2")):
            if ent in taken:
                first, partner = taken[ent]
                error = DataFormatError(
                    self.path, f"{side_name} entity {shown_ent} is linked on line {first} (to {partner}) and again on "
                    f"line {number} (to {shown_other}); the gold alignment must be 1-to-1, else one entity can sit "
                    "on both sides of a train/test split.", line=number,
                    fix=f"keep one of lines {first} and {number} (the correct counterpart of {shown_ent}); to keep a "
                    "published release's many-to-one links as they are, set gold_one_to_one: false in the dataset "
                    "config.")
                if self.conflicts is None:
                    raise error
                self.conflicts.append(error)
        self.seen[(a, b)] = number
        self.left.setdefault(a, (number, shown_b))
        self.right.setdefault(b, (number, shown_a))
        self.rows.append((a, b))

    def links(self, fix: str) -> np.ndarray:
        """The ``(L, 2)`` links; no link at all is a :class:`DataFormatError` with ``fix``."""
        if not self.rows:
            raise DataFormatError(self.path, "no gold links.", fix=fix)
        return np.asarray(self.rows, dtype=np.int64)


def read_links(path: str | Path, kg1_ids: np.ndarray, kg2_ids: np.ndarray, num_entities: int,
               conflicts: list[DataFormatError] | None = None) -> np.ndarray:
    """``kg1_id<TAB>kg2_id`` gold links -> ``(L, 2)``.

    Rejects unknown ids, wrong sides, duplicate links and any entity linked twice (the gold alignment is 1-to-1:
    the error names both lines). With a ``conflicts`` list, links that break 1-to-1 are kept and their errors
    appended there instead (the caller decides whether the release's many-to-one links are acceptable).
    """
    path = _require(Path(path), "gold link (ill_ent_ids)")
    side = np.zeros(num_entities, dtype=np.int8)
    side[kg1_ids] = 1
    side[kg2_ids] = 2
    links = _OneToOneLinks(path, conflicts)
    for number, fields in _lines(path):
        if len(fields) != 2:
            raise DataFormatError(path, f"expected 2 tab-separated fields (kg1_id, kg2_id), found {len(fields)}.",
                                  line=number, fix="write one 'kg1_id<TAB>kg2_id' link per line.")
        a = _int(path, number, fields[0], "kg1 id")
        b = _int(path, number, fields[1], "kg2 id")
        if not (0 <= a < num_entities and side[a] == 1):
            raise DataFormatError(path, f"left id {a} is not a KG1 entity (ent_ids_1).", line=number,
                                  fix="the first column must hold KG1 ids, the second KG2 ids.")
        if not (0 <= b < num_entities and side[b] == 2):
            raise DataFormatError(path, f"right id {b} is not a KG2 entity (ent_ids_2).", line=number,
                                  fix="the first column must hold KG1 ids, the second KG2 ids.")
        links.add(number, a, b)
    return links.links(fix="ill_ent_ids must hold at least one link.")


def read_attribute_keys(path: str | Path, uri_to_id: dict[str, int]) -> tuple[list[tuple[int, str]], int]:
    """``uri<TAB>attr<TAB>attr...`` -> ``([(entity_id, attr), ...], lines_skipped_for_unknown_uri)``.

    Lines whose URI is not an entity of the pair are skipped and counted (the published readers do the same:
    the attribute files of some releases cover more entities than the pair keeps).
    """
    path = _require(Path(path), "attribute")
    pairs: list[tuple[int, str]] = []
    skipped = 0
    for _number, fields in _lines(path):
        ent = uri_to_id.get(fields[0])
        if ent is None:
            skipped += 1
            continue
        pairs.extend((ent, key) for key in fields[1:] if key)
    return pairs, skipped


class ImpossibleDateError(ValueError):
    """A date-shaped value whose month or day cannot exist (``1999-13-45``, ``1999-02-29``)."""


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_numeric_value(text: str) -> float:
    """A float, or an ISO-like date ``YYYY-MM-DD`` as a fractional year.

    YAGO writes unknown digits as ``#`` and DB15K writes an unknown month/day as ``0``: an unknown month/day counts
    as January/the 1st, unknown year digits as 0 (``19##-##-##`` -> 1900.0, the start of the known range).
    A month above 12 or a day the month does not have (``1999-02-29``; with unknown year digits February has 29)
    raises :class:`ImpossibleDateError` -- never clamped into a plausible date.
    """
    text = text.strip().strip('"')
    try:
        value = float(text)
    except ValueError:
        return _parse_date(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_date(text: str) -> float:
    """``YYYY-MM-DD`` (``#`` digits, ``0`` month/day: unknown) as a fractional year; see :func:`parse_numeric_value`."""
    match = _DATE.match(text)
    if match is None:
        raise ValueError(text)
    year_text, month_text, day_text = match.groups()
    year = int(year_text.replace("#", "0"))
    month = int(month_text) if "#" not in month_text else 0
    day = int(day_text) if "#" not in day_text else 0
    if month > 12:
        raise ImpossibleDateError(f"month {month} does not exist (1-12; 0 or '#' for unknown)")
    longest = _DAYS_IN_MONTH[month - 1] if month else 31
    if month == 2 and "#" not in year_text and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        longest = 28
    if day > longest:
        where = f"month {month} of {year}" if month else "any month"
        raise ImpossibleDateError(f"day {day} does not exist in {where}")
    return year + (max(month, 1) - 1) / 12.0 + (max(day, 1) - 1) / 365.0


def read_numeric_triples(path: str | Path, uri_to_id: dict[str, int]) -> tuple[list[tuple[int, str, float]], int]:
    """``uri<TAB>attribute<TAB>value`` -> ``([(entity_id, attribute, value)], lines_skipped_for_unknown_uri)``."""
    path = _require(Path(path), "numeric triple")
    rows: list[tuple[int, str, float]] = []
    skipped = 0
    for number, fields in _lines(path):
        if len(fields) != 3:
            raise DataFormatError(path, f"expected 3 tab-separated fields (uri, attribute, value), found "
                                  f"{len(fields)}.", line=number, fix="write 'uri<TAB>attribute<TAB>value'.")
        ent = uri_to_id.get(fields[0])
        if ent is None:
            skipped += 1
            continue
        rows.append((ent, fields[1], _numeric_value(path, number, fields[2])))
    return rows, skipped


def _numeric_value(path: Path, number: int, text: str) -> float:
    """:func:`parse_numeric_value` of line ``number``'s value, or a :class:`DataFormatError` naming the line."""
    try:
        return parse_numeric_value(text)
    except ImpossibleDateError as err:
        raise DataFormatError(path, f"value {text!r} is an impossible date: {err}.", line=number,
                              fix="write a real calendar date (YYYY-MM-DD), with '#' (or 0) for unknown "
                              "digits.") from None
    except ValueError:
        raise DataFormatError(path, f"value {text!r} is neither a finite number nor a date.",
                              line=number, fix="write a number (12.5) or a date (1969-03-01).") from None


def read_translated_names(path: str | Path, num_entities: int) -> dict[int, str]:
    """DBP15K ``translated_ent_name`` JSON (list of ``[id, [token, ...]]``) -> ``{id: 'token token'}``."""
    path = _require(Path(path), "translated entity name")
    try:
        records = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"invalid JSON ({err.msg}).", line=err.lineno,
                              fix="the file must be a JSON list of [entity_id, [token, ...]].") from None
    names: dict[int, str] = {}
    for position, record in enumerate(records if isinstance(records, list) else [None]):
        ok = isinstance(record, list) and len(record) == 2 and isinstance(record[0], int)
        ok = ok and isinstance(record[1], list) and all(isinstance(t, str) for t in record[1])
        if not ok:
            raise DataFormatError(path, f"record {position} is not [entity_id, [token, ...]].",
                                  fix="the file must be a JSON list of [entity_id, [token, ...]].")
        if not 0 <= record[0] < num_entities:
            raise DataFormatError(path, f"record {position}: entity id {record[0]} is outside the entity files.",
                                  fix="use the ids of ent_ids_1 / ent_ids_2.")
        names[record[0]] = " ".join(record[1])
    return names


def read_mid2name(path: str | Path, uri_to_id: dict[str, int]) -> dict[int, str]:
    """mmkb ``FB15K_mid2name.txt`` (``mid<TAB>name``) -> ``{id: name}`` for the mids of the pair."""
    path = _require(Path(path), "mid2name")
    names: dict[int, str] = {}
    for number, fields in _lines(path):
        if len(fields) != 2:
            raise DataFormatError(path, f"expected 2 tab-separated fields (mid, name), found {len(fields)}.",
                                  line=number, fix="write 'mid<TAB>name'.")
        ent = uri_to_id.get(fields[0])
        if ent is not None and ent not in names:
            names[ent] = fields[1].replace("_", " ")
    return names


def name_from_uri(uri: str) -> str | None:
    """The readable local name of a URI (``<http://dbpedia.org/resource/Rebecca_Hall>`` -> ``Rebecca Hall``).

    Opaque identifiers (Freebase mids, Wikidata Q-ids) have no readable name and give ``None``.
    """
    local = uri.strip("<>").rstrip("/").rsplit("/", 1)[-1]
    if not local or local.startswith("m.") or re.fullmatch(r"[QP]\d+", local) or uri.startswith("/m/"):
        return None
    return local.replace("_", " ")


def _numpy_global(module: str, name: str) -> object:
    """The numpy object pickled as ``module.name``, under numpy 1.x (``numpy.core``) or 2.x (``numpy._core``)."""
    modern = module.replace("numpy.core.", "numpy._core.")
    for candidate in dict.fromkeys((modern, modern.replace("numpy._core.", "numpy.core."))):  # no deprecated import
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"{module}.{name}")


# The only globals a pickled ``dict[int -> numpy float array]`` refers to (protocols 2..5, numpy 1.x and 2.x):
# array / scalar reconstruction, the dtype and array types, and ``_codecs.encode`` (protocol 2 writes bytes with it).
_PICKLE_GLOBALS = frozenset(
    [(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")]
    + [(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")]
    + [("numpy", "dtype"), ("numpy", "ndarray"), ("_codecs", "encode")]
)


class _FeatureUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers, numbers and numpy arrays only -- it never calls other code.

    ``pickle.load`` calls whatever callable a pickle names (``os.system``, ``exec``...); this one refuses every
    global outside :data:`_PICKLE_GLOBALS` with a :class:`DataFormatError` naming it.
    """

    def __init__(self, handle, path: Path):
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise DataFormatError(
                self.path, f"refers to the Python global {module}.{name}, which an image feature file never needs "
                "(loading it could run code, so it is not loaded).",
                fix="re-create the file with pickle.dump of a plain dict {entity_id: numpy float vector}, "
                "or remove it (or set images: null in the dataset config) to run without images.")
        if module == "_codecs":
            return codecs.encode
        return _numpy_global(module, name)


def read_image_features(path: str | Path, num_entities: int) -> dict[int, np.ndarray]:
    """``pkls/*.pkl``: pickled ``dict[int entity_id -> vector]`` -> ``{id: float32 vector}`` (all one length).

    Every value must be a 1-D, non-empty, finite numeric vector (a numpy array, or a list of numbers) of one
    length; an empty dict, a string, a 2-D array (never silently flattened) or a key outside the entity ids is a
    :class:`DataFormatError` naming the entity. All-zero or identical vectors are the loader's concern
    (:func:`mmea_lightning.data.loader.informative_images`).

    The file is read with a restricted unpickler (:class:`_FeatureUnpickler`): only plain containers, numbers and
    numpy arrays / scalars / dtypes are built; a pickle naming any other global (which ``pickle.load`` would call)
    is refused with a :class:`DataFormatError` and never executed.
    """
    path = _require(Path(path), "image feature")
    try:
        with open(path, "rb") as handle:
            raw = _FeatureUnpickler(handle, path).load()
    except DataFormatError:
        raise
    except Exception as err:  # any malformed byte stream: truncated, not a pickle, bad opcode arguments...
        raise DataFormatError(path, f"cannot be unpickled ({type(err).__name__}: {err}).",
                              fix="it must be a pickled dict mapping entity id -> numpy vector.") from None
    if not isinstance(raw, dict):
        raise DataFormatError(path, f"holds a {type(raw).__name__}, not a dict.",
                              fix="it must be a pickled dict mapping entity id -> numpy vector.")
    if not raw:
        raise DataFormatError(path, "holds an empty dict: no image vectors.",
                              fix="remove the file, or set images: null in the dataset config, to run without "
                              "images; else write the dict of entity id -> numpy vector.")
    features: dict[int, np.ndarray] = {}
    dim = None
    for key, vector in raw.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= int(key) < num_entities:
            raise DataFormatError(path, f"key {key!r} is not an entity id in 0..{num_entities - 1}.",
                                  fix="key the dict by the global entity ids of ent_ids_1/ent_ids_2.")
        vec = _image_vector(path, int(key), vector)
        if dim is None:
            dim = vec.shape[0]
        if vec.shape[0] != dim or not np.isfinite(vec).all():
            raise DataFormatError(path, f"vector of entity {key} has length {vec.shape[0]} (expected {dim}) or "
                                  "non-finite values.", fix="store one finite vector of one length per entity.")
        features[int(key)] = vec
    return features


def _image_vector(path: Path, entity: int, value: object) -> np.ndarray:
    """``value`` as a float32 vector: a 1-D, non-empty array (or list) of real numbers, else a DataFormatError."""
    fix = "store one 1-D numpy float vector per entity id (e.g. np.float32 of shape (d,))."
    array = None
    if isinstance(value, (np.ndarray, list, tuple)):
        try:
            array = np.asarray(value)
        except ValueError:  # ragged nested lists
            array = None
    if array is None or array.dtype.kind not in "fiu":
        what = type(value).__name__ if array is None else f"{type(value).__name__} of dtype {array.dtype}"
        raise DataFormatError(path, f"the value of entity {entity} is a {what}, not a numeric vector.", fix=fix)
    if array.ndim != 1 or array.shape[0] == 0:
        raise DataFormatError(path, f"the vector of entity {entity} has shape {array.shape}; a 1-D, non-empty vector "
                              "is expected (it is never flattened: its layout would be guessed).", fix=fix)
    return array.astype(np.float32)


# ------------------------------------------------------------------------------------ your own pair: URI-keyed TSV
# The readers below read the files of a user's own pair (:mod:`mmea_lightning.data.tsv_pair`): every entity is named
# by its URI, never by an id. URI fields must be non-empty, without surrounding whitespace or a byte-order mark.

_NO_BOM_FIX = ("re-save the file as UTF-8 without byte-order marks (a BOM at the very start of a file is ignored; "
               "one inside it, e.g. from concatenated files, would become part of a URI).")


def _uri(path: Path, number: int, text: str, what: str) -> str:
    """``text`` when it is a usable URI field, else a :class:`DataFormatError` naming the line and the fix."""
    if not text.strip():
        raise DataFormatError(path, f"the {what} is empty.", line=number,
                              fix="write a non-empty URI in every URI column (a doubled or trailing tab leaves one "
                              "empty).")
    if "\ufeff" in text:
        raise DataFormatError(path, f"the {what} {text!r} holds a byte-order mark (U+FEFF).", line=number,
                              fix=_NO_BOM_FIX)
    if text != text.strip():
        raise DataFormatError(path, f"the {what} {text!r} has leading or trailing whitespace.", line=number,
                              fix="remove the spaces around the URI: URIs are matched exactly.")
    return text


def _fields(path: Path, number: int, fields: list[str], counts: tuple[int, ...], layout: str) -> list[str]:
    """``fields`` when there are ``counts`` of them, else a :class:`DataFormatError` showing ``layout``."""
    if len(fields) not in counts:
        expected = " or ".join(str(c) for c in counts)
        raise DataFormatError(path, f"expected {expected} tab-separated fields ({layout}), found {len(fields)}.",
                              line=number, fix=f"write one '{layout}' record per line, fields separated by one tab.")
    return fields


def read_uri_triples(path: str | Path) -> list[tuple[str, str, str]]:
    """``head_uri<TAB>relation_uri<TAB>tail_uri`` -> ``[(head, relation, tail)]`` in file order.

    A file without any triple is a :class:`DataFormatError` (see :func:`read_triples`).
    """
    path = Path(path)
    rows = []
    for number, fields in _lines(path):
        head, relation, tail = _fields(path, number, fields, (3,), "head_uri<TAB>relation_uri<TAB>tail_uri")
        rows.append((_uri(path, number, head, "head URI"), _uri(path, number, relation, "relation URI"),
                     _uri(path, number, tail, "tail URI")))
    if not rows:
        raise DataFormatError(path, "no triples: this graph has no edge, so its structure (which every aligner uses) "
                              "is missing.", fix="write one 'head_uri<TAB>relation_uri<TAB>tail_uri' line per triple; "
                              "both graphs of a pair need relation triples.")
    return rows


def read_uri_list(path: str | Path, what: str) -> list[tuple[int, str]]:
    """One URI per line -> ``[(line_number, uri)]`` in file order; a repeated URI is a :class:`DataFormatError`."""
    path = Path(path)
    rows: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for number, fields in _lines(path):
        uri = _uri(path, number, _fields(path, number, fields, (1,), "uri")[0], what)
        if uri in first:
            raise DataFormatError(path, f"{what} {uri!r} is listed again (first on line {first[uri]}).", line=number,
                                  fix="list every URI once.")
        first[uri] = number
        rows.append((number, uri))
    return rows


def read_uri_links(path: str | Path, kg1: dict[str, int], kg2: dict[str, int], sources: tuple[str, str],
                   conflicts: list[DataFormatError] | None = None) -> np.ndarray:
    """``kg1_uri<TAB>kg2_uri`` gold links -> ``(L, 2)`` ids, with ``kg1`` / ``kg2`` mapping each graph's URIs to ids.

    Rejects a URI that is no entity of its graph (``sources`` name where a graph's entities come from, for the
    message), swapped columns, duplicate links and -- unless ``conflicts`` collects them -- any entity linked twice.
    """
    path = Path(path)
    links = _OneToOneLinks(path, conflicts)
    graphs = (("KG1", kg1, kg2, sources[0]), ("KG2", kg2, kg1, sources[1]))
    for number, fields in _lines(path):
        uris = _fields(path, number, fields, (2,), "kg1_uri<TAB>kg2_uri")
        ids = []
        for column, (uri_text, (graph, index, other, source)) in enumerate(zip(uris, graphs, strict=True)):
            uri = _uri(path, number, uri_text, f"{graph} URI")
            if uri not in index:
                if uri in other and uris[1 - column].strip() in index:
                    raise DataFormatError(path, f"{uri!r} is a {'KG2' if graph == 'KG1' else 'KG1'} entity, not a "
                                          f"{graph} one: the columns look swapped.", line=number,
                                          fix="write 'kg1_uri<TAB>kg2_uri': the entity of triples_1.tsv first.")
                raise DataFormatError(path, f"the {graph} URI {uri!r} is in no triple of {source}.", line=number,
                                      fix="check the URI (URIs are matched exactly: case, prefix and trailing "
                                      f"slash); an entity without triples can be declared in "
                                      f"entities_{graph[-1]}.tsv (one URI per line), or remove the link.")
            ids.append(index[uri])
        links.add(number, ids[0], ids[1], shown=(repr(uris[0]), repr(uris[1])))
    return links.links(fix="write at least one 'kg1_uri<TAB>kg2_uri' link.")


def read_uri_attributes(path: str | Path, index: dict[str, int]) -> tuple[list[tuple[int, str]], list[int]]:
    """``uri<TAB>attribute[<TAB>value]`` -> ``([(entity_id, attribute)], skipped_lines)``.

    The attribute modality uses the keys (as EVA, MCLEA and MEAformer do); a value is allowed and not read. Lines whose
    URI is no entity of the graph are skipped and their numbers returned (the caller records them).
    """
    path = Path(path)
    pairs: list[tuple[int, str]] = []
    skipped: list[int] = []
    for number, fields in _lines(path):
        fields = _fields(path, number, fields, (2, 3), "uri<TAB>attribute[<TAB>value]")
        uri = _uri(path, number, fields[0], "entity URI")
        if not fields[1].strip():
            raise DataFormatError(path, "the attribute is empty.", line=number,
                                  fix="write 'uri<TAB>attribute[<TAB>value]' with a non-empty attribute.")
        if uri not in index:
            skipped.append(number)
            continue
        pairs.append((index[uri], fields[1]))
    return pairs, skipped


def read_uri_numeric(path: str | Path, index: dict[str, int]) -> tuple[list[tuple[int, str, float]], list[int]]:
    """``uri<TAB>attribute<TAB>value`` -> ``([(entity_id, attribute, value)], skipped_lines)``.

    Values are numbers or dates (:func:`parse_numeric_value`); lines of unknown URIs are skipped (numbers returned).
    """
    path = Path(path)
    rows: list[tuple[int, str, float]] = []
    skipped: list[int] = []
    for number, fields in _lines(path):
        fields = _fields(path, number, fields, (3,), "uri<TAB>attribute<TAB>value")
        uri = _uri(path, number, fields[0], "entity URI")
        if not fields[1].strip():
            raise DataFormatError(path, "the attribute is empty.", line=number,
                                  fix="write 'uri<TAB>attribute<TAB>value' with a non-empty attribute.")
        value = _numeric_value(path, number, fields[2])
        if uri not in index:
            skipped.append(number)
            continue
        rows.append((index[uri], fields[1], value))
    return rows, skipped


def read_uri_names(path: str | Path, index: dict[str, int]) -> tuple[dict[int, str], list[int]]:
    """``uri<TAB>name`` -> ``({entity_id: name}, skipped_lines)``; a second name for one URI is an error."""
    path = Path(path)
    names: dict[int, str] = {}
    first: dict[str, int] = {}
    skipped: list[int] = []
    for number, fields in _lines(path):
        uri, name = _fields(path, number, fields, (2,), "uri<TAB>name")
        uri = _uri(path, number, uri, "entity URI")
        if not name.strip():
            raise DataFormatError(path, f"the name of {uri!r} is empty.", line=number,
                                  fix="write a name, or remove the line (an entity without a name is allowed).")
        if uri in first:
            raise DataFormatError(path, f"{uri!r} already has a name on line {first[uri]}.", line=number,
                                  fix="keep one name per entity.")
        first[uri] = number
        if uri not in index:
            skipped.append(number)
            continue
        names[index[uri]] = name.strip()
    return names, skipped


def read_image_matrix(matrix_path: str | Path, uris_path: str | Path,
                      index: dict[str, int]) -> tuple[dict[int, np.ndarray], list[int]]:
    """``images_<g>.npy`` (a ``(K, d)`` numeric matrix) and its URI list (line ``i`` names row ``i``) ->
    ``({entity_id: float32 vector}, skipped_lines)``.

    The matrix is read with ``numpy.load(allow_pickle=False)``: an object array (which would need unpickling) is
    refused. It must be 2-D, non-empty, finite, with exactly one row per URI line; URIs that are no entity of the
    graph are skipped (their line numbers returned). Pickled dicts are read only in the benchmark layout
    (:func:`read_image_features`).
    """
    matrix_path, uris_path = Path(matrix_path), Path(uris_path)
    fix = ("save a (K, d) float matrix with numpy.save (row i = the entity on line i of "
           f"{uris_path.name}).")
    try:
        matrix = np.load(matrix_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataFormatError(matrix_path, f"is not a readable .npy numeric array ({err}).", fix=fix) from None
    if not isinstance(matrix, np.ndarray) or matrix.dtype.kind not in "fiu":
        raise DataFormatError(matrix_path, f"holds {getattr(matrix, 'dtype', type(matrix).__name__)} values, not "
                              "numbers.", fix=fix)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise DataFormatError(matrix_path, f"has shape {matrix.shape}; a 2-D (entities, dimensions) matrix with at "
                              "least one row and one column is expected.", fix=fix)
    uris = read_uri_list(uris_path, "image URI")
    if len(uris) != matrix.shape[0]:
        raise DataFormatError(uris_path, f"lists {len(uris)} URIs but {matrix_path.name} has {matrix.shape[0]} rows.",
                              fix=f"write one URI per row of {matrix_path.name}, in row order.")
    matrix = matrix.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        number, uri = uris[int(bad[0])]
        raise DataFormatError(matrix_path, f"row {int(bad[0])} ({uri!r}, line {number} of {uris_path.name}) holds "
                              "NaN or infinite values.", fix="store finite vectors; drop the row (and its URI) of "
                              "an entity without an image.")
    features: dict[int, np.ndarray] = {}
    skipped: list[int] = []
    for row, (number, uri) in enumerate(uris):
        if uri in index:
            features[index[uri]] = matrix[row]
        else:
            skipped.append(number)
    return features, skipped
