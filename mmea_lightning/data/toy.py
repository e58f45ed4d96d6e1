"""The default dataset: a small, deterministic, generated multi-modal KG pair in the ``mmkg`` layout.

A latent world (typed entities with a latent vector, a name and typed relations) is sampled once; each of
the two graphs is then an independent noisy view of it: ~80% of the latent edges plus a few noise edges, a
renumbered relation vocabulary (KG2 merges two latent relations), per-graph attribute keys, numeric values
with noise and mixed formats, image vectors that are a projection of the latent vector plus noise (~20%
missing) and names (KG2's are typo-ridden copies of KG1's). Entity ids are shuffled so they carry no
alignment signal. Only numpy and the standard library are used; the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np

TOY_FOLDER = "TOY/pair"  # relative to the toy root

NUM_TYPES, LATENT_DIM, IMAGE_DIM, NUM_REL = 8, 16, 64, 20
SYLLABLES = ("ka ri to mu sa ne lo vi da pe zu ran mor tel bis gon fa hu li qua ser wen yo cal dor "
             "fen gar hol jin kes lum").split()
REL_NAMES = ("bornIn locatedIn memberOf partOf foundedBy worksFor capitalOf spouse child parent influencedBy "
             "producedBy directedBy starring genre country language affiliation owner successor").split()
# (KG1 name, KG2 name, date-like) -- the numeric attributes; KG2 names follow Wikidata property ids.
NUMERIC = (("birthDate", "P569", True), ("foundingDate", "P571", True), ("population", "P1082", False),
           ("elevation", "P2044", False), ("area", "P2046", False), ("height", "P2048", False))
PLAIN_ATTRS = ("label abstract thumbnail homepage motto nickname occupation nationality religion currency "
               "anthem capital leader founder award website slogan status").split()
EXTRA_TOKENS = ("the", "of", "saint", "new", "old", "de")


def _write_lines(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")


def _typo(token: str, rng: np.random.Generator) -> str:
    """One random character edit (substitute / delete / insert / swap); never returns an empty token."""
    i, op = int(rng.integers(len(token))), int(rng.integers(4))
    letter = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
    if op == 0:
        return token[:i] + letter + token[i + 1:]
    if op == 1 and len(token) > 2:
        return token[:i] + token[i + 1:]
    if op == 3 and i + 1 < len(token):
        return token[:i] + token[i + 1] + token[i] + token[i + 2:]
    return token[:i] + letter + token[i:]


def _numeric_text(value: float, date_like: bool, decimals: int, rng: np.random.Generator) -> str:
    """Render a value; a date-like one becomes a float year, an ISO date or a year with unknown month/day."""
    if not date_like:
        return f"{value:.{decimals}f}"
    year = int(np.floor(value))
    month = min(12, int((value - year) * 12) + 1)
    day = min(28, int(((value - year) * 12 % 1) * 28) + 1)
    form = rng.random()
    if form < 0.45:
        return f"{value:.1f}"
    if form < 0.9:
        return f"{year:04d}-{month:02d}-{day:02d}"
    return f"{year:04d}-##-##"


def _write_pair(out: Path, seed: int, num_aligned: int, num_unaligned: int) -> None:
    """Sample the latent world and write both views of it under ``out``."""
    rng = np.random.default_rng(seed)
    a, u = num_aligned, num_unaligned
    n = a + 2 * u  # latent entities: [0, a) shared, [a, a+u) KG1 only, [a+u, a+2u) KG2 only
    types = rng.integers(NUM_TYPES, size=n)
    centers = rng.normal(size=(NUM_TYPES, LATENT_DIM))
    latent = centers[types] + rng.normal(size=(n, LATENT_DIM))
    names = [["".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4))))
              for _ in range(int(rng.integers(2, 4)))] for _ in range(n)]

    # Latent graph: every entity gets one edge, the rest go by popularity (preferential attachment).
    popularity = rng.lognormal(0.0, 1.0, size=n)
    popularity /= popularity.sum()
    extra = int(3.2 * n)
    heads = np.concatenate([np.arange(n), rng.choice(n, size=extra, p=popularity)])
    tails = rng.choice(n, size=n + extra, p=popularity)
    rel_table = rng.permutation(np.resize(np.arange(NUM_REL), NUM_TYPES * NUM_TYPES * 2)).reshape(
        NUM_TYPES, NUM_TYPES, 2)
    rels = rel_table[types[heads], types[tails], rng.integers(2, size=n + extra)]
    edges = np.unique(np.stack([heads, rels, tails], axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 2]]

    members = [np.r_[0:a, a:a + u], np.r_[0:a, a + u:a + 2 * u]]  # latent entities of each graph
    n1 = len(members[0])
    order = [rng.permutation(m) for m in members]
    gid = [np.full(n, -1, dtype=np.int64) for _ in range(2)]  # latent -> global id, per graph
    gid[0][order[0]] = np.arange(n1)
    gid[1][order[1]] = n1 + np.arange(len(members[1]))

    # Relations: KG1 keeps the latent numbering; KG2 merges the last two types and renumbers the rest.
    kg2_numbering = NUM_REL + rng.permutation(NUM_REL - 1)
    rel_map = [np.arange(NUM_REL), kg2_numbering[np.minimum(np.arange(NUM_REL), NUM_REL - 2)]]
    pids = rng.choice(np.arange(100, 3000), size=NUM_REL - 1 + len(PLAIN_ATTRS), replace=False)
    rel_rows = [f"{r}\thttp://toy-a.org/property/{REL_NAMES[r]}" for r in range(NUM_REL)]
    rel_rows += [f"{NUM_REL + k}\thttp://toy-b.org/prop/P{pids[k]}" for k in range(NUM_REL - 1)]
    attr_names = [[f"toy-a:{x[0]}" for x in NUMERIC] + [f"toy-a:{x}" for x in PLAIN_ATTRS],
                  [f"toyb:{x[1]}" for x in NUMERIC] + [f"toyb:P{p}" for p in pids[NUM_REL - 1:]]]
    type_plain = [len(NUMERIC) + rng.choice(len(PLAIN_ATTRS), size=5, replace=False)
                  for _ in range(NUM_TYPES)]
    type_numeric = [rng.choice(len(NUMERIC), size=2, replace=False) for _ in range(NUM_TYPES)]
    num_proj = rng.normal(size=(len(NUMERIC), LATENT_DIM))
    num_proj /= np.linalg.norm(num_proj, axis=1, keepdims=True) * np.sqrt(2.0)
    img_proj = rng.normal(size=(IMAGE_DIM, LATENT_DIM)) / np.sqrt(LATENT_DIM)

    # URIs (KG1 readable, KG2 opaque) and names (KG2's aligned names are noisy copies of KG1's).
    seen: set[str] = set()
    uris: dict[int, str] = {}
    for e in order[0]:
        base = "_".join(t.capitalize() for t in names[e])
        uri, k = base, 2
        while uri in seen:
            uri, k = f"{base}_{k}", k + 1
        seen.add(uri)
        uris[int(gid[0][e])] = f"http://toy-a.org/resource/{uri}"
    qids = rng.choice(np.arange(1000, 10**6), size=len(order[1]), replace=False)
    for e, q in zip(order[1], qids, strict=True):
        uris[int(gid[1][e])] = f"http://toy-b.org/entity/Q{q}"
    name_rows: dict[int, list[str]] = {int(gid[0][e]): list(names[e]) for e in order[0]}
    for e in order[1]:
        tokens = list(names[e])
        if e < a:
            tokens = [_typo(t, rng) if rng.random() < 0.25 else t for t in tokens]
            if len(tokens) > 1 and rng.random() < 0.15:
                tokens.pop(int(rng.integers(len(tokens))))
            if rng.random() < 0.15:
                tokens.insert(int(rng.integers(len(tokens) + 1)), str(rng.choice(EXTRA_TOKENS)))
        name_rows[int(gid[1][e])] = tokens

    pair = out / TOY_FOLDER
    images: dict[int, np.ndarray] = {}
    links = np.stack([gid[0][:a], gid[1][:a]], axis=1)[rng.permutation(a)]
    _write_lines(pair / "ill_ent_ids", [f"{x}\t{y}" for x, y in links])
    _write_lines(pair / "rel_ids", rel_rows)
    for g, tag in enumerate(("A", "B")):
        inside = np.isin(edges[:, 0], members[g]) & np.isin(edges[:, 2], members[g])
        kept = edges[inside & (rng.random(len(edges)) < 0.8)]
        triples = np.stack([gid[g][kept[:, 0]], rel_map[g][kept[:, 1]], gid[g][kept[:, 2]]], axis=1)
        num_noise = max(1, len(kept) // 50)
        noise = np.stack([gid[g][rng.choice(members[g], num_noise)],
                          rel_map[g][rng.integers(NUM_REL, size=num_noise)],
                          gid[g][rng.choice(members[g], num_noise)]], axis=1)
        triples = np.unique(np.concatenate([triples, noise]), axis=0)
        triples = triples[triples[:, 0] != triples[:, 2]]
        _write_lines(pair / f"triples_{g + 1}", [f"{h}\t{r}\t{t}" for h, r, t in triples])
        _write_lines(pair / f"ent_ids_{g + 1}", [f"{gid[g][e]}\t{uris[int(gid[g][e])]}" for e in sorted(
            order[g], key=lambda e: gid[g][e])])

        attr_rows, numeric_rows = [], []
        for e in sorted(order[g], key=lambda e: gid[g][e]):
            ident, z, keys = int(gid[g][e]), latent[e], []
            for k in sorted(type_numeric[types[e]]):
                if rng.random() >= 0.6:
                    continue
                _, _, date_like = NUMERIC[k]
                s = float(num_proj[k] @ z) + rng.normal(0.0, 0.03)
                value = [1950 + 25 * s + 0.5, 1900 + 40 * s + 0.5, 10 ** (4.5 + s), 800 + 400 * s,
                         10 ** (2 + 0.8 * s), 1.75 + 0.1 * s][k]
                text = _numeric_text(value, date_like, 2 if k == 5 else 1, rng)
                numeric_rows.append(f"{uris[ident]}\t{attr_names[g][k]}\t{text}")
                keys.append(attr_names[g][k])
            keys += [attr_names[g][k] for k in sorted(type_plain[types[e]]) if rng.random() < 0.7]
            if keys:
                attr_rows.append("\t".join([uris[ident], *keys]))
            image = img_proj @ z + rng.normal(0.0, 1.15, size=IMAGE_DIM)
            if rng.random() >= 0.2:
                images[ident] = image.astype(np.float32)
        _write_lines(pair / f"training_attrs_{g + 1}", attr_rows)
        _write_lines(out / "mmkb" / f"TOY{tag}" / f"TOY{tag}_NumericalTriples.txt", numeric_rows)

    name_path = out / "TOY" / "translated_ent_name" / "toy.json"
    name_path.parent.mkdir(parents=True, exist_ok=True)
    name_path.write_text(json.dumps([[i, name_rows[i]] for i in sorted(name_rows)]) + "\n", encoding="utf-8")
    (out / "pkls").mkdir(parents=True, exist_ok=True)
    with open(out / "pkls" / "TOY_id_img_feature_dict.pkl", "wb") as fh:
        pickle.dump({i: images[i] for i in sorted(images)}, fh, protocol=4)


#: written into every root this module generates; only a root holding it may ever be replaced
OWNER_MARKER = ".mmea-lightning-generated"


class NotGeneratedHere(RuntimeError):
    """A folder that the toy generator did not create: it is never replaced or deleted."""


def generate_toy_pair(root: str | Path, *, seed: int = 0, num_aligned: int = 400, num_unaligned: int = 60,
                      overwrite: bool = False) -> Path:
    """Write the toy pair under ``root`` (mmkg layout) and return ``root``.

    Idempotent: if ``root/TOY/pair/ill_ent_ids`` exists and ``overwrite`` is False, nothing is done. Atomic:
    everything is written into a temporary sibling directory that is then renamed to ``root``, so an interrupted run
    never leaves a half-written root.

    Safe: every generated root holds the marker file ``.mmea-lightning-generated``. An existing ``root`` is replaced
    (when incomplete, or with ``overwrite``) only if it holds that marker, i.e. this function created it; any other
    existing folder -- a user's data root above all -- is left untouched and :class:`NotGeneratedHere` is raised.
    An empty existing folder is filled (nothing in it can be lost).
    """
    root = Path(root)
    marker = root / TOY_FOLDER / "ill_ent_ids"
    if marker.exists() and not overwrite:
        return root
    if num_aligned < 1 or num_unaligned < 0:
        raise ValueError(f"need num_aligned >= 1 and num_unaligned >= 0, got {num_aligned}, {num_unaligned}")
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)
        _write_pair(tmp, seed, num_aligned, num_unaligned)
        (tmp / OWNER_MARKER).write_text("generated by mmea_lightning.data.toy; safe to delete\n", encoding="utf-8")
        if marker.exists() and not overwrite:  # another process finished first: keep its (identical) copy
            return root
        trash = None
        if root.exists() and any(root.iterdir()):
            _check_replaceable(root)  # re-checked right before the move
            trash = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old-")) / "old"
            os.replace(root, trash)
        os.replace(tmp, root)  # over an empty folder or none
        if trash is not None:
            shutil.rmtree(trash.parent, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _check_replaceable(root: Path) -> None:
    """Raise :class:`NotGeneratedHere` unless ``root`` is absent, empty or was generated by this module."""
    if not root.exists():
        return
    if not root.is_dir():
        raise NotGeneratedHere(f"{root} exists and is not a folder; the toy pair is not written there.")
    if any(root.iterdir()) and not (root / OWNER_MARKER).is_file():
        raise NotGeneratedHere(
            f"{root} is a non-empty folder that mmea-lightning did not create (no {OWNER_MARKER} in it): the toy pair "
            "is never written into, and never replaces, a folder it does not own. Generate it elsewhere (the default "
            "is <cache_dir>/toy) or empty that folder yourself."
        )
