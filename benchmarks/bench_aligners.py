"""Speed and memory of the aligners on real data, side by side in one run: data-load seconds, seconds per training
epoch (the mean of ``--epochs`` epochs after ``--warmup`` warm-up epochs, validation excluded; also in process CPU
seconds), one validation check (``val s``; ``+ckpt s`` adds the checkpoints a check writes and the epoch-end hooks), one
test evaluation (every test protocol), the projected minutes of the config's full run (``max_epochs`` epochs, a
``+ckpt s`` every ``check_val_every_n_epoch``, one test) and the peak resident memory; with ``--profile``, where a
training epoch's time goes.

    python benchmarks/bench_aligners.py --data-dir /path/to/mmkg --models mpsea eva mclea meaformer \\
        --datasets fbdb15k dbp15k_zh_en --epochs 3 --threads 2
    python benchmarks/bench_aligners.py --data-dir /path/to/mmkg --models mpsea --datasets fbdb15k --profile
    python benchmarks/bench_aligners.py --data-dir /path/to/mmkg --models eva --datasets dbp15k_zh_en \\
        --set eva@dbp15k_zh_en:experiment=eva_all_modalities --json eva.json

Each (model, dataset) runs in its own process through the real entry point (``mmea_lightning.train.run``: the
composed Hydra config, the DataModule, the Lightning trainer with the run's own callbacks), so the figures and the
peak memory are those of a real run. What runs by default:

* ``eva``: ``experiment=eva_structure`` on DBP15K (its published structure+relation setting),
  ``experiment=eva_all_modalities`` elsewhere;
* ``mpsea``: ``experiment=mpsea`` (the published non-iterative 500-epoch run);
* ``mclea``, ``meaformer``: their model config with every modality the data has.

``--set MODEL[@DATASET]:OVERRIDE`` (repeatable) adds Hydra overrides to one model (on one dataset); an
``experiment=...`` override replaces the default experiment. ``--override`` adds overrides to every run. Seed ratio:
the dataset's default (0.2 on the FB pairs, 0.3 on DBP15K) unless overridden.

Features come from the feature cache (``MMEA_CACHE_DIR``, else the repository's ``.cache``), so ``load_s`` is the
time to read the pair and load its cached features; ``--fresh-cache`` builds them from scratch in a temporary
directory instead (then ``features_s`` is the real feature time).

``--threads`` sets the torch threads of every run (``threads=N``); on a machine shared with other jobs 2 threads
can spin-wait badly, compare figures measured under the same load only. ``--profile`` adds one more training epoch
after the timed ones, run under ``torch.profiler`` with wall-clock hooks: the epoch split into batch fetching,
forward (per aligner sub-module: each modality's encoder, the fusion, the losses), backward, optimiser step and the
rest, then the operators that took the most time (forward and backward). The profiled epoch is not in the mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")
DATASETS = ["dbp15k_zh_en", "dbp15k_ja_en", "dbp15k_fr_en", "fbdb15k", "fbyg15k", "dwy15k", "openea_d_w_v1",
            "openea_d_w_v2", "openea_en_fr_v1", "openea_en_de_v1"]
PROFILE_DEPTH = 3  # aligner sub-modules timed under --profile, down to this depth (e.g. encoders.heads.relation)
TOP_OPERATORS = 15


def default_overrides(model: str, dataset: str) -> list[str]:
    """The experiment (or model) choice of ``model`` on ``dataset`` (see the module docstring)."""
    if model == "eva":
        return ["experiment=eva_structure" if dataset.startswith("dbp15k") else "experiment=eva_all_modalities"]
    if model == "mpsea":
        return ["experiment=mpsea"]
    return [f"model={model}"]


def parse_sets(sets: list[str]) -> list[tuple[str, str | None, str]]:
    """``MODEL[@DATASET]:OVERRIDE`` -> ``(model, dataset or None, override)``."""
    parsed = []
    for item in sets:
        target, sep, override = item.partition(":")
        model, _, dataset = target.partition("@")
        if not sep or not model or not override or "=" not in override:
            raise SystemExit(f"--set {item!r}: expected MODEL[@DATASET]:KEY=VALUE, "
                             "e.g. eva@dbp15k_zh_en:experiment=eva_structure")
        parsed.append((model, dataset or None, override))
    return parsed


def run_overrides(model: str, dataset: str, sets: list[tuple[str, str | None, str]]) -> list[str]:
    """The Hydra overrides of one (model, dataset): the default choice, unless ``--set`` gives an ``experiment=``
    (or ``model=``) of its own, then the ``--set`` overrides that apply."""
    own = [o for m, d, o in sets if m == model and d in (None, dataset)]
    choice = default_overrides(model, dataset)
    if any(o.split("=", 1)[0].lstrip("+~") in ("experiment", "model") for o in own):
        choice = []
    if model not in ("eva", "mpsea", "mclea", "meaformer") and not own:
        choice = [f"model={model}"]
    return [*choice, *own]


# ------------------------------------------------------------------------------------------------------ the probe
PROBES: list[BenchProbe] = []  # the probe the run's config instantiated (read back after the run)


class BenchProbe(L.Callback):
    """Times every training epoch (its validation excluded) and, on epoch ``profile_epoch``, profiles it: wall
    time per phase of each step, per aligner sub-module (forward hooks) and per operator (``torch.profiler``)."""

    def __init__(self, profile_epoch: int | None = None, depth: int = PROFILE_DEPTH) -> None:
        PROBES.append(self)
        self.profile_epoch = profile_epoch
        self.depth = depth
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []  # process CPU time (all threads)
        self.profile: dict | None = None
        self.validation_started = math.nan
        self.validation_cycle = math.nan
        self._start = 0.0
        self._in_validation = 0.0
        self._val_start = 0.0
        self._profiling = False

    # ---- epoch timing (validation excluded, as RunTimer)
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._in_validation = self._cpu_in_validation = 0.0
        if trainer.current_epoch == self.profile_epoch:
            self._start_profile(pl_module)
        self._cpu_start = time.process_time()
        self._start = time.perf_counter()
        self._last = self._start

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._profiling:
            self._stop_profile(pl_module)
        self._val_start = self.validation_started = time.perf_counter()
        self._val_cpu_start = time.process_time()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._in_validation += time.perf_counter() - self._val_start
        self._cpu_in_validation += time.process_time() - self._val_cpu_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self._profiling:
            self._stop_profile(pl_module)
        if trainer.current_epoch != self.profile_epoch:
            self.epoch_seconds.append(now - self._start - self._in_validation)
            self.epoch_cpu_seconds.append(cpu - self._cpu_start - self._cpu_in_validation)

    def on_train_end(self, trainer, pl_module) -> None:
        # the last epoch validates: from its validation's start to here come the validation, the checkpoints it
        # writes (best, last) and the epoch-end hooks -- what a run pays every check_val_every_n_epoch epochs
        self.validation_cycle = time.perf_counter() - self.validation_started

    # ---- step phases (profiled epoch only)
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._profiling:
            now = time.perf_counter()
            self._phases["batch fetch / loop"] += now - self._last
            self._last = now

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._profiling:
            now = time.perf_counter()
            self._phases["forward + loss"] += now - self._last
            self._last = now

    def on_after_backward(self, trainer, pl_module) -> None:
        if self._profiling:
            now = time.perf_counter()
            self._phases["backward"] += now - self._last
            self._last = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._profiling:
            now = time.perf_counter()
            self._phases["optimizer step (+ clipping, logging)"] += now - self._last
            self._last = now
            self._steps += 1

    def _start_profile(self, pl_module) -> None:
        import torch

        self._phases: dict[str, float] = defaultdict(float)
        self._modules: dict[str, float] = defaultdict(float)
        self._calls: dict[str, int] = {}
        self._steps = 0
        self._handles = []
        aligner = pl_module.aligner
        for name, module in aligner.named_modules():
            if not name or name.count(".") >= self.depth:
                continue
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            self._handles.append(module.register_forward_hook(self._post_hook(name)))
        self._open: dict[str, list[float]] = defaultdict(list)
        self._profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self._profiler.__enter__()
        self._profiling = True

    def _pre_hook(self, name: str):
        def hook(module, args):
            self._calls.setdefault(name, 0)  # first call: the execution order of the report
            self._open[name].append(time.perf_counter())
        return hook

    def _post_hook(self, name: str):
        def hook(module, args, output):
            self._modules[name] += time.perf_counter() - self._open[name].pop()
            self._calls[name] += 1
        return hook

    def _stop_profile(self, pl_module) -> None:
        now = time.perf_counter()
        epoch = now - self._start - self._in_validation
        self._profiler.__exit__(None, None, None)
        self._profiling = False
        for handle in self._handles:
            handle.remove()
        tail = now - self._last  # epoch end: the loop's bookkeeping after the last step
        events = self._profiler.key_averages()
        operators = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
        total_self = sum(e.self_cpu_time_total for e in events) or 1.0
        self.profile = {
            "epoch_s": epoch,
            "steps": self._steps,
            "phases_s": {**dict(self._phases), "epoch end": tail},
            "modules_s": {name: self._modules[name] for name in self._modules},
            "module_calls": dict(self._calls),
            "operators": [{"name": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count,
                           "share": e.self_cpu_time_total / total_self} for e in operators[:TOP_OPERATORS]],
        }


# ------------------------------------------------------------------------------------------------------ one run
def measure(model: str, dataset: str, data_dir: str, epochs: int, warmup: int, overrides: list[str],
            threads: int | None, profile: bool, fresh_cache: bool, test: bool) -> dict:
    """One (model, dataset), in this process (called in a child process by :func:`main`)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from mmea_lightning.train import run

    with tempfile.TemporaryDirectory() as tmp:
        full = [*overrides, f"dataset={dataset}", f"data_dir={data_dir}", "logger=none", f"test={str(test).lower()}"]
        if threads:
            full.append(f"threads={threads}")
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=full)
        full_epochs, val_every = int(cfg.model.max_epochs), int(cfg.model.check_val_every_n_epoch)
        trained = warmup + epochs + int(profile)
        with open_dict(cfg):
            cfg.paths.output_dir = cfg.paths.root_dir = tmp
            cfg.paths.cache_dir = (str(Path(tmp) / "cache") if fresh_cache
                                   else os.environ.get("MMEA_CACHE_DIR", str(REPO / ".cache")))
            cfg.model.max_epochs = trained
            cfg.model.check_val_every_n_epoch = trained  # one validation check, in the last epoch
            cfg.trainer.enable_progress_bar = False
            cfg.callbacks.bench_probe = {"_target_": "__main__.BenchProbe",
                                         "profile_epoch": warmup + epochs if profile else None}
        start = time.perf_counter()
        summary = run(cfg)
        wall = time.perf_counter() - start
    probe = PROBES[-1]
    info = summary["run"]
    perf = info["perf"]
    timed = probe.epoch_seconds[warmup:]
    s_epoch = statistics.fmean(timed)
    val_s = perf["validation_seconds"] / max(perf["validation_checks"], 1)
    cycle_s = probe.validation_cycle  # validation + its checkpoint writes
    test_s = perf["test_seconds"] if test else 0.0
    return {
        "model": model,
        "dataset": dataset,
        "overrides": overrides,
        "threads": info.get("threads"),
        "entities": info["counts"]["kg1_entities"] + info["counts"]["kg2_entities"],
        "train_links": info.get("split", {}).get("train") if isinstance(info.get("split"), dict) else None,
        "modalities": "+".join(info["modalities_used"]),
        "load_s": info["timings"]["load_seconds"] + info["timings"]["feature_seconds"],
        "features_s": info["timings"]["feature_seconds"],
        "warmup_epoch_s": statistics.fmean(probe.epoch_seconds[:warmup]) if warmup else math.nan,
        "s_per_epoch": s_epoch,
        "cpu_s_per_epoch": statistics.fmean(probe.epoch_cpu_seconds[warmup:]),
        "epoch_s_min": min(timed),
        "epoch_s_max": max(timed),
        "epochs_timed": len(timed),
        "val_s": val_s,
        "val_ckpt_s": cycle_s,
        "test_s": test_s,
        "max_epochs": full_epochs,
        "val_every": val_every,
        "projected_min": (full_epochs * s_epoch + full_epochs // val_every * cycle_s + test_s) / 60,
        "peak_rss_gib": perf["peak_memory_mb"] / 1024,
        "wall_s": wall,
        "profile": probe.profile,
    }


# ------------------------------------------------------------------------------------------------------ output
COLUMNS = [("model", "model", "{}"), ("dataset", "dataset", "{}"), ("modalities", "modalities", "{}"),
           ("threads", "thr", "{}"), ("load_s", "load s", "{:.1f}"), ("s_per_epoch", "s/epoch", "{:.3f}"),
           ("cpu_s_per_epoch", "cpu s/ep", "{:.3f}"),
           ("epoch_s_min", "min", "{:.3f}"), ("epoch_s_max", "max", "{:.3f}"), ("val_s", "val s", "{:.1f}"),
           ("val_ckpt_s", "+ckpt s", "{:.1f}"),
           ("test_s", "test s", "{:.1f}"), ("max_epochs", "epochs", "{}"), ("projected_min", "proj. min", "{:.1f}"),
           ("peak_rss_gib", "peak GiB", "{:.2f}"), ("wall_s", "wall s", "{:.0f}")]


def table(rows: list[dict]) -> str:
    """A plain aligned text table of the main figures."""
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        cells.append([fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def profile_report(row: dict, min_share: float = 0.005) -> str:
    """Where the profiled epoch's time went, as text (sub-modules under ``min_share`` of the epoch left out)."""
    prof = row.get("profile")
    if not prof:
        return ""
    epoch = prof["epoch_s"]
    lines = [f"\n== profile: {row['model']} / {row['dataset']}: one training epoch of {prof['steps']} step(s), "
             f"{epoch:.3f} s under the profiler (timed epochs: {row['s_per_epoch']:.3f} s)"]
    lines.append("  phase                                   seconds   share")
    for name, seconds in sorted(prof["phases_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<38} {seconds:8.3f}  {seconds / epoch:6.1%}")
    lines.append(f"  forward, per aligner sub-module (inclusive, nested ones indented; >= {min_share:.1%})"
                 "      seconds   share   calls")
    modules = prof["modules_s"]
    top_level = sum(s for name, s in modules.items() if "." not in name)
    forward = prof["phases_s"].get("forward + loss", 0.0)
    for name in prof["module_calls"]:  # in the order of their first call
        if modules.get(name, 0.0) < min_share * epoch:
            continue
        depth = name.count(".")
        label = "  " * depth + name
        share = modules[name] / epoch
        lines.append(f"  {label:<66} {modules[name]:8.3f}  {share:6.1%}  {prof['module_calls'][name]:5d}")
    rest = forward - top_level
    lines.append(f"  {'(training_loss outside sub-modules: inline losses, gathers)':<66} {rest:8.3f}  "
                 f"{rest / epoch:6.1%}")
    lines.append(f"  top {len(prof['operators'])} operators by self CPU time (all threads; forward and backward)")
    for op in prof["operators"]:
        lines.append(f"  {op['name'][:62]:<62} {op['self_s']:8.3f}  {op['share']:6.1%}  {op['calls']:6d}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("MMEA_DATA_DIR"),
                        help="the mmkg data root (default: $MMEA_DATA_DIR)")
    parser.add_argument("--models", nargs="+", default=["eva"])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--epochs", type=int, default=3, help="timed training epochs (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up epochs, not timed")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of each run (threads=N)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="MODEL[@DATASET]:OVERRIDE",
                        help="a Hydra override for one model (on one dataset); repeatable")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--profile", action="store_true", help="profile one extra training epoch per run")
    parser.add_argument("--fresh-cache", action="store_true", help="build the features in a fresh cache")
    parser.add_argument("--no-test", action="store_true", help="skip the test evaluation")
    parser.add_argument("--json", help="also write every row (and profile) to this JSON file")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir is None:
        parser.error("--data-dir (or $MMEA_DATA_DIR) is required")
    if args.epochs < 1 or args.warmup < 0:
        parser.error("--epochs must be at least 1 and --warmup at least 0")
    sets = parse_sets(args.sets)
    if args.one:
        model, dataset = args.one.split("/")
        row = measure(model, dataset, args.data_dir, args.epochs, args.warmup,
                      [*run_overrides(model, dataset, sets), *args.override], args.threads, args.profile,
                      args.fresh_cache, not args.no_test)
        print("RESULT " + json.dumps(row))
        return
    rows, failed = [], []
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    for model in args.models:
        for dataset in args.datasets:
            command = [sys.executable, __file__, "--one", f"{model}/{dataset}", "--data-dir", args.data_dir,
                       "--epochs", str(args.epochs), "--warmup", str(args.warmup)]
            command += [f"--set={s}" for s in args.sets]
            if args.override:
                command += ["--override", *args.override]
            command += [flag for flag, on in (("--profile", args.profile), ("--fresh-cache", args.fresh_cache),
                                              ("--no-test", args.no_test)) if on]
            if args.threads:
                command += ["--threads", str(args.threads)]
            print(f"-- {model} / {dataset} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"{model} / {dataset}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                failed.append(f"{model}/{dataset}")
                continue
            rows.append(json.loads(lines[-1][len("RESULT "):]))
            r = rows[-1]
            print(f"   {r['s_per_epoch']:.3f} s/epoch, {r['projected_min']:.1f} min projected, "
                  f"{r['peak_rss_gib']:.2f} GiB", file=sys.stderr, flush=True)
    if rows:
        print(table(rows))
        for row in rows:
            report = profile_report(row)
            if report:
                print(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "failed": failed}, indent=1))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
