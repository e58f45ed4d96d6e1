"""Speed and memory of the aligners on real data: load + feature time, seconds per training epoch, evaluation
time (all protocols), peak memory.

    python benchmarks/bench_aligners.py --data-dir ../shared/data                  # EVA, every dataset, 20 epochs
    python benchmarks/bench_aligners.py --data-dir ../shared/data --models eva mclea meaformer --datasets fbdb15k

Each (model, dataset) runs in its own process through the real entry point (composed Hydra config, Lightning
trainer), so the peak memory is that run's own. Features are built from scratch (a fresh cache directory) so the
feature time is real. EVA on DBP15K uses its published structure+relation setting (``experiment=eva_structure``);
everything else runs its model config with every modality the data has. Extra Hydra overrides: ``--override``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
DATASETS = ["dbp15k_zh_en", "dbp15k_ja_en", "dbp15k_fr_en", "fbdb15k", "fbyg15k", "dwy15k", "openea_d_w_v1",
            "openea_d_w_v2", "openea_en_fr_v1", "openea_en_de_v1"]


def measure(model: str, dataset: str, data_dir: str, epochs: int, extra: list[str]) -> dict:
    """One (model, dataset), in this process."""
    import os

    os.environ.setdefault("WANDB_MODE", "offline")
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from mmea_lightning.train import run

    if model == "eva":
        choice = ["experiment=eva_structure" if dataset.startswith("dbp15k") else "experiment=eva_all_modalities"]
    else:
        choice = [f"model={model}"]
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*choice, f"dataset={dataset}", f"data_dir={data_dir}", f"model.max_epochs={epochs}",
                     f"model.check_val_every_n_epoch={epochs}", "logger=none", *extra]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = cfg.paths.root_dir = cfg.paths.cache_dir = tmp
            cfg.trainer.enable_progress_bar = False
        start = time.perf_counter()
        summary = run(cfg)
        wall = time.perf_counter() - start
    info = summary["run"]
    return {
        "model": model,
        "dataset": dataset,
        "entities": info["counts"]["kg1_entities"] + info["counts"]["kg2_entities"],
        "modalities": "+".join(info["modalities_used"]),
        "load_s": info["timings"]["load_seconds"],
        "features_s": info["timings"]["feature_seconds"],
        "s_per_epoch": info["perf"]["seconds_per_epoch"],
        "eval_s": info["perf"]["test_seconds"],
        "peak_mib": info["perf"]["peak_memory_mb"],
        "wall_s": wall,
        f"test_csls/hits@1@{epochs}ep": summary.get("test_csls/hits@1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the mmkg data root (e.g. ../shared/data)")
    parser.add_argument("--models", nargs="+", default=["eva"])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.models[0], args.datasets[0], args.data_dir, args.epochs,
                                             args.override)))
        return
    rows = []
    for model in args.models:
        for dataset in args.datasets:
            proc = subprocess.run([sys.executable, __file__, "--one", "--data-dir", args.data_dir, "--epochs",
                                   str(args.epochs), "--models", model, "--datasets", dataset,
                                   "--override", *args.override], capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"{model} / {dataset}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(lines[-1][len("RESULT "):]))
            print(json.dumps(rows[-1]), flush=True)
    if rows:
        keys = list(rows[0])
        print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        for row in rows:
            print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
