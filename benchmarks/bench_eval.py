"""Seconds and memory of one test evaluation (all six protocols) on real data: the shared evaluation (every cosine
computed once, ``mmea_lightning/eval/shared_ranking.py``) against ranking each protocol on its own
(``evaluate_alignment(shared=False)``: six ``rank_targets`` calls, the evaluation before issue 29).

    python benchmarks/bench_eval.py --data-dir /path/to/mmkg                           # DBP15K ZH-EN and FB15K-DB15K
    python benchmarks/bench_eval.py --data-dir /path/to/mmkg --datasets fbdb15k --models eva mpsea --threads 2
    python benchmarks/bench_eval.py --data-dir /path/to/mmkg --checkpoint runs/x/checkpoints/best.ckpt
    python benchmarks/bench_eval.py --data-dir /path/to/mmkg --json results/benchmarks/eval.json

The pair is read and its features built through the normal data path (the model's config composed as
``benchmarks/bench_aligners.py`` composes it: ``experiment=eva_structure`` on DBP15K, ``eva_all_modalities`` on the
others, ``experiment=mpsea``, else ``model=<name>``), and the embeddings are the model's forward pass at its
initial weights (seed 0): the real dimension and the real test split (``--checkpoint``: a trained run's weights and
split instead). Each (dataset, model, path) is measured in its own process, so its memory figures are its own:
``peak_rss_mib`` is the process's peak during the evaluation, ``eval_extra_mib`` what the evaluation added to the
resident memory it started from. ``eval_cpu_s`` is the process CPU time of the evaluation (on a machine shared with
other jobs the wall time of 2 threads suffers most). ``--repeat`` evaluates several times and reports the fastest.
The metrics of the two paths are compared: ``max_metric_diff`` is their largest difference (0: identical ranks).

``--json PATH`` also writes ``{"args": ..., "rows": [...], "summary": [...]}`` (atomically): ``args`` the command's
arguments plus the code's commit and the machine (CPUs, load average at the start); ``rows`` the rows printed as JSON
lines; ``summary`` per (dataset, model) measured on both paths: their seconds, CPU seconds and extra memory, the
speed-up (per-protocol / shared wall and CPU seconds) and ``max_metric_diff``. The results page renders it
(``python -m mmea_lightning.report ... --benchmarks results/benchmarks``).
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

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")
PATHS = ("per_protocol", "shared")


def _memory_kib() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    """Reset the process's peak resident memory (Linux ``clear_refs``); ``False`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _embeddings(model: str, dataset: str, data_dir: str, cache_dir: str, checkpoint: str | None):
    """``(module, embeddings, test links)`` through the normal data path."""
    import torch

    if checkpoint:
        from mmea_lightning.lightning.restore import restore_run

        restored = restore_run(checkpoint, data_dir=data_dir, cache_dir=cache_dir)
        module, datamodule = restored.module, restored.datamodule
    else:
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        if model == "eva":
            choice = ["experiment=eva_structure" if dataset.startswith("dbp15k") else "experiment=eva_all_modalities"]
        elif model == "mpsea":
            choice = ["experiment=mpsea"]
        else:
            choice = [f"model={model}"]
        from omegaconf import open_dict

        overrides = [*choice, f"dataset={dataset}", f"data_dir={data_dir}", "logger=none"]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = cfg.paths.root_dir = cfg.paths.cache_dir = cache_dir
        import lightning as L

        L.seed_everything(cfg.seed, workers=True, verbose=False)  # as train does: the split is the run's split
        datamodule = instantiate(cfg.data, _convert_="object")
        datamodule.setup("fit")
        torch.manual_seed(0)
        module = instantiate(cfg.model.module, _partial_=True)(features=datamodule.features)
    start = time.perf_counter()
    embeddings = module.embeddings()
    forward_s = time.perf_counter() - start
    links = torch.as_tensor(datamodule.split.test, dtype=torch.long)
    return module, embeddings, links, forward_s


def measure(model: str, dataset: str, path: str, data_dir: str, cache_dir: str, threads: int | None,
            checkpoint: str | None, repeat: int) -> dict:
    """One (model, dataset, evaluation path), in this process."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import torch

    from mmea_lightning.eval import PROTOCOLS, evaluate_alignment

    if threads:
        torch.set_num_threads(threads)
    module, embeddings, links, forward_s = _embeddings(model, dataset, data_dir, cache_dir, checkpoint)
    embeddings = embeddings.detach().cpu().contiguous()
    del module.aligner  # the model's parameters and feature tables are not part of the evaluation's memory
    kg1_ids, kg2_ids = module.kg1_ids.cpu(), module.kg2_ids.cpu()
    walls, cpus = [], []
    peak_reset = _reset_peak()
    before = _memory_kib()
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        metrics = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, protocols=PROTOCOLS, csls_k=module.csls_k,
                                     chunk_size=module.eval_chunk_size, shared=path == "shared")
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    after = _memory_kib()
    return {
        "dataset": dataset,
        "model": "checkpoint" if checkpoint else model,
        "path": path,
        "threads": torch.get_num_threads(),
        "dim": embeddings.size(1),
        "test_links": len(links),
        "kg1": len(kg1_ids),
        "kg2": len(kg2_ids),
        "forward_s": forward_s,
        "eval_s": min(walls),
        "eval_cpu_s": min(cpus),
        "peak_rss_mib": after["VmHWM"] / 1024 if peak_reset else None,
        "eval_extra_mib": (after["VmHWM"] - before["VmRSS"]) / 1024 if peak_reset else None,
        "test_csls/hits@1": metrics["test_csls/hits@1"],
        "metrics": metrics,
    }


def summarize(rows: list[dict]) -> list[dict]:
    """Per (dataset, model) measured on both paths, in row order: the shared and per-protocol wall and CPU seconds
    and extra memory, the speed-ups (per-protocol / shared) and ``max_metric_diff`` (the largest difference of their
    metrics; ``None`` when a row carries no ``metrics``)."""
    by_key = {(r["dataset"], r["model"], r["path"]): r for r in rows}
    summary = []
    for (dataset, model, path), shared in by_key.items():
        other = by_key.get((dataset, model, "per_protocol"))
        if path != "shared" or other is None:
            continue
        metrics = shared.get("metrics"), other.get("metrics")
        diff = (max(abs(metrics[0][k] - metrics[1][k]) for k in metrics[1])
                if all(isinstance(m, dict) for m in metrics) else None)
        summary.append({
            "dataset": dataset, "model": model,
            "shared_s": shared["eval_s"], "per_protocol_s": other["eval_s"],
            "shared_cpu_s": shared["eval_cpu_s"], "per_protocol_cpu_s": other["eval_cpu_s"],
            "shared_extra_mib": shared.get("eval_extra_mib"), "per_protocol_extra_mib": other.get("eval_extra_mib"),
            "speedup": other["eval_s"] / shared["eval_s"], "cpu_speedup": other["eval_cpu_s"] / shared["eval_cpu_s"],
            "max_metric_diff": diff,
        })
    return summary


def provenance() -> dict:
    """The code's commit (``+dirty`` with uncommitted changes; ``None`` outside a git checkout) and the machine."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"commit": commit, "cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the mmkg data root (e.g. /path/to/mmkg)")
    parser.add_argument("--datasets", nargs="+", default=["dbp15k_zh_en", "fbdb15k"])
    parser.add_argument("--models", nargs="+", default=["eva"])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the evaluation (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="evaluations per process; the fastest is reported")
    parser.add_argument("--checkpoint", default=None, help="a trained run's checkpoint (its dataset and weights)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: a fresh temporary directory)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the rows and the shared vs per-protocol summary to this JSON file")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = measure(args.models[0], args.datasets[0], args.paths[0], args.data_dir, args.cache_dir,
                         args.threads, args.checkpoint, args.repeat)
        print("RESULT " + json.dumps(result))
        return
    started = provenance()
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or tmp
        rows = []
        datasets = ["checkpoint"] if args.checkpoint else args.datasets
        for model in (["checkpoint"] if args.checkpoint else args.models):
            for dataset in datasets:
                for path in args.paths:
                    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
                    command = [sys.executable, __file__, "--one", "--data-dir", args.data_dir, "--cache-dir",
                               cache_dir, "--models", model, "--datasets", dataset, "--paths", path,
                               "--threads", str(args.threads), "--repeat", str(args.repeat)]
                    if args.checkpoint:
                        command += ["--checkpoint", args.checkpoint]
                    proc = subprocess.run(command, capture_output=True, text=True, env=env)
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                    if proc.returncode != 0 or not lines:
                        print(f"{model} / {dataset} / {path}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                        continue
                    rows.append(json.loads(lines[-1][len("RESULT "):]))
                    shown = {k: v for k, v in rows[-1].items() if k != "metrics"}
                    print(json.dumps(shown), flush=True)
    if not rows:
        sys.exit(1)
    keys = [k for k in rows[0] if k != "metrics"]
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    summary = summarize(rows)
    for s in summary:
        diff = "-" if s["max_metric_diff"] is None else f"{s['max_metric_diff']:.3g}"
        print(f"\n{s['model']} / {s['dataset']}: shared {s['shared_s']:.2f} s vs per-protocol "
              f"{s['per_protocol_s']:.2f} s wall ({s['speedup']:.1f}x), CPU {s['shared_cpu_s']:.2f} s vs "
              f"{s['per_protocol_cpu_s']:.2f} s ({s['cpu_speedup']:.1f}x); max_metric_diff {diff}")
    if args.json:
        from mmea_lightning.atomic_files import write_json_atomic

        shown = [{k: v for k, v in row.items() if k != "metrics"} for row in rows]
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.json, {"args": {**vars(args), **started}, "rows": shown, "summary": summary})


if __name__ == "__main__":
    main()
