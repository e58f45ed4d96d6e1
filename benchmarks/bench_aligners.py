"""Speed and memory of the aligners on real data: load + feature time, seconds per training epoch (wall and
process CPU), seconds per validation check, evaluation time (all protocols), peak memory, and the projected wall
time of the model's full run (``max_epochs`` epochs with a validation every ``check_val_every_n_epoch``; the
``full_run_cpu_min`` column counts process CPU time instead, training and validation: with ``--threads 1`` what the
run needs of one idle core, whatever the neighbours do).

    python benchmarks/bench_aligners.py --data-dir /path/to/mmkg                   # EVA, every dataset, 20 epochs
    python benchmarks/bench_aligners.py --data-dir /path/to/mmkg --models eva mclea meaformer --datasets fbdb15k
    python benchmarks/bench_aligners.py --data-dir /path/to/mmkg --models mpsea eva --datasets fbdb15k --epochs 5

Each (model, dataset) runs in its own process through the real entry point (composed Hydra config, Lightning
trainer), so the peak memory is that run's own. Features are built from scratch (a fresh cache directory) so the
feature time is real. EVA on DBP15K uses its published structure+relation setting (``experiment=eva_structure``),
MPSEA its published run (``experiment=mpsea``); everything else runs its model config with every modality the data
has. Extra Hydra overrides: ``--override``. ``--threads`` sets the torch/OpenMP threads of the runs (on a machine
shared with other jobs, 2 OpenMP threads can spin-wait badly; ``cpu_s_per_epoch`` is the work done, whoever waits).
"""

from __future__ import annotations

import argparse
import json
import os
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
    os.environ.setdefault("WANDB_MODE", "offline")
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from mmea_lightning.train import run

    if model == "eva":
        choice = ["experiment=eva_structure" if dataset.startswith("dbp15k") else "experiment=eva_all_modalities"]
    elif model == "mpsea":
        choice = ["experiment=mpsea"]
    else:
        choice = [f"model={model}"]
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*choice, f"dataset={dataset}", f"data_dir={data_dir}", "logger=none", *extra]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        full_epochs, val_every = int(cfg.model.max_epochs), int(cfg.model.check_val_every_n_epoch)
        with open_dict(cfg):
            cfg.model.max_epochs = epochs
            cfg.model.check_val_every_n_epoch = epochs  # one validation check, at the end
            cfg.paths.output_dir = cfg.paths.root_dir = cfg.paths.cache_dir = tmp
            cfg.trainer.enable_progress_bar = False
        start = time.perf_counter()
        summary = run(cfg)
        wall = time.perf_counter() - start
    info = summary["run"]
    perf = info["perf"]
    checks = max(perf["validation_checks"], 1)
    val_s, val_cpu_s = perf["validation_seconds"] / checks, perf["validation_cpu_seconds"] / checks
    return {
        "model": model,
        "dataset": dataset,
        "entities": info["counts"]["kg1_entities"] + info["counts"]["kg2_entities"],
        "modalities": "+".join(info["modalities_used"]),
        "load_s": info["timings"]["load_seconds"],
        "features_s": info["timings"]["feature_seconds"],
        "s_per_epoch": perf["seconds_per_epoch"],
        "cpu_s_per_epoch": perf["cpu_seconds_per_epoch"],
        "val_s": val_s,
        f"full_run_min ({full_epochs}ep)": (full_epochs * perf["seconds_per_epoch"] + full_epochs // val_every * val_s
                                            + perf["test_seconds"]) / 60,
        "full_run_cpu_min": (full_epochs * perf["cpu_seconds_per_epoch"] + full_epochs // val_every * val_cpu_s) / 60,
        "eval_s": perf["test_seconds"],
        "peak_mib": perf["peak_memory_mb"],
        "wall_s": wall,
        f"test_csls/hits@1@{epochs}ep": summary.get("test_csls/hits@1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the mmkg data root (e.g. /path/to/mmkg)")
    parser.add_argument("--models", nargs="+", default=["eva"])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch / OpenMP threads of each run")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.models[0], args.datasets[0], args.data_dir, args.epochs,
                                             args.override)))
        return
    rows = []
    for model in args.models:
        for dataset in args.datasets:
            env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
            proc = subprocess.run([sys.executable, __file__, "--one", "--data-dir", args.data_dir, "--epochs",
                                   str(args.epochs), "--models", model, "--datasets", dataset,
                                   "--override", *args.override], capture_output=True, text=True, env=env)
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
