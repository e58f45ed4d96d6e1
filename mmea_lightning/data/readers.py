"""Readers for every file of the ``mmkg`` layout (the formats: ``docs/configuration.md``, section ``dataset``).

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
    seen: dict[tuple[int, int], int] = {}
    left_line: dict[int, tuple[int, int]] = {}  # kg1 id -> (line, kg2 id) of its link
    right_line: dict[int, tuple[int, int]] = {}  # kg2 id -> (line, kg1 id)
    rows: list[tuple[int, int]] = []
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
        if (a, b) in seen:
            raise DataFormatError(path, f"duplicate gold link ({a}, {b}), first on line {seen[(a, b)]}.",
                                  line=number, fix="remove the repeated line.")
        for ent, other, taken, side_name in ((a, b, left_line, "KG1"), (b, a, right_line, "KG2")):
            if ent in taken:
                first, partner = taken[ent]
                error = DataFormatError(
                    path, f"{side_name} entity {ent} is linked on line {first} (to {partner}) and again on line "
                    f"{number} (to {other}); the gold alignment must be 1-to-1, else one entity can sit on both "
                    "sides of a train/test split.", line=number,
                    fix=f"keep one of lines {first} and {number} (the correct counterpart of {ent}); to keep a "
                    "published release's many-to-one links as they are, set gold_one_to_one: false in the dataset "
                    "config.")
                if conflicts is None:
                    raise error
                conflicts.append(error)
        seen[(a, b)] = number
        left_line.setdefault(a, (number, b))
        right_line.setdefault(b, (number, a))
        rows.append((a, b))
    if not rows:
        raise DataFormatError(path, "no gold links.", fix="ill_ent_ids must hold at least one link.")
    return np.asarray(rows, dtype=np.int64)


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
        try:
            value = parse_numeric_value(fields[2])
        except ImpossibleDateError as err:
            raise DataFormatError(path, f"value {fields[2]!r} is an impossible date: {err}.", line=number,
                                  fix="write a real calendar date (YYYY-MM-DD), with '#' (or 0) for unknown "
                                  "digits.") from None
        except ValueError:
            raise DataFormatError(path, f"value {fields[2]!r} is neither a finite number nor a date.",
                                  line=number, fix="write a number (12.5) or a date (1969-03-01).") from None
        rows.append((ent, fields[1], value))
    return rows, skipped


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
