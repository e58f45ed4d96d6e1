"""Seed quality and cost of the unsupervised seed generators on real data: per stage, the seed count, the precision
against the gold links (read only here, after the seeds are built), the graph coverage (PSQE Eq. 11) and seconds.

    python benchmarks/bench_seeds.py --data-dir /path/to/mmkg                       # psqe + pivot, 5 datasets
    python benchmarks/bench_seeds.py --data-dir /path/to/mmkg --datasets dbp15k_fr_en --generators psqe \\
        --override seeds.stages=2 seeds.global_sampling.epochs=100

The configuration is the real composed one (``seeds=<generator>``, ``dataset=<name>``); DBP15K runs "with surface"
(names: sentence embeddings + character bigrams), the MMKG pairs without (``--surface`` changes that). Stage caching
is off so the seconds are real; built features are cached under ``--cache-dir`` (default ``$MMEA_CACHE_DIR``).
A generator that cannot run on a dataset (e.g. no modality that compares the two graphs) gets a row with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
_MISSING = object()
DATASETS = ["dbp15k_zh_en", "dbp15k_ja_en", "dbp15k_fr_en", "fbdb15k", "fbyg15k"]


def measure(generator: str, dataset: str, data_dir: str, cache_dir: str, surface: bool, extra: list[str]) -> list[dict]:
    """The per-stage rows of one (generator, dataset)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mmea_lightning.data.features import FeatureSettings, load_or_build_features
    from mmea_lightning.data.loader import DatasetSpec, load_pair, resolve_root
    from mmea_lightning.seeds.report import seed_quality_rows, summary_rows

    overrides = [f"seeds={generator}", f"dataset={dataset}", f"data_dir={data_dir}", f"surface={surface}",
                 "seeds.cache=false"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        base_cfg = compose(config_name="train", overrides=overrides)
        # an override of a setting this generator does not have (e.g. a PSQE stage for pivots) is skipped
        extra = [o for o in extra if OmegaConf.select(base_cfg, o.split("=", 1)[0].lstrip("+~"), default=_MISSING)
                 is not _MISSING]
        cfg = compose(config_name="train", overrides=[*overrides, *extra])
    spec = DatasetSpec.from_config(dict(cfg.dataset))
    start = time.perf_counter()
    pair = load_pair(spec, resolve_root(spec, data_dir, cache_dir))
    features = load_or_build_features(pair, FeatureSettings(**dict(cfg.features)), cache_dir)
    load_seconds = time.perf_counter() - start
    base = {"dataset": dataset, "generator": generator, "surface": surface}
    seeds = instantiate(cfg.seeds, _convert_="object")
    try:
        generation = seeds.generate(features)  # the generator sees the features only
    except ValueError as err:
        return [{**base, "stage": "-", "error": str(err)}]
    rows = summary_rows(seed_quality_rows(generation, pair.gold_links))  # gold links: logging only
    return [{**base, **row, "load_s": load_seconds, "info": {k: v for k, v in generation.info.items()
                                                              if k in ("primary", "modality", "raw_weights")}}
            for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the mmkg data root (e.g. /path/to/mmkg)")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--generators", nargs="+", default=["psqe", "pivot"])
    parser.add_argument("--surface", choices=["auto", "true", "false"], default="auto",
                        help="auto: with names on DBP15K, without on the other pairs")
    parser.add_argument("--cache-dir", default=os.environ.get("MMEA_CACHE_DIR"),
                        help="feature cache (default $MMEA_CACHE_DIR, else a temporary directory)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides (e.g. seeds.n=2000)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--log-level", default="WARNING", help="e.g. INFO: stage-by-stage progress")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s: %(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mmea_lightning.seeds.quality import quality_table

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        for dataset in args.datasets:
            surface = dataset.startswith("dbp15k") if args.surface == "auto" else args.surface == "true"
            for generator in args.generators:
                new = measure(generator, dataset, args.data_dir, cache_dir, surface, args.override)
                rows += new
                for row in new:
                    if "error" in row:
                        print(f"{dataset} / {generator}: cannot run: {row['error']}", flush=True)
                print(quality_table([r for r in new if "error" not in r]), flush=True)
    print("\n" + quality_table([r for r in rows if "error" not in r]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
