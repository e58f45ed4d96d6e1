"""Speed measured by the benchmarks, for the results page: the ``--json`` files of ``benchmarks/bench_aligners.py``
(seconds per training epoch, validation, test, projected full run, peak memory, and, with ``--profile``, where a
profiled epoch's time goes) and ``benchmarks/bench_eval.py`` (one test evaluation of every protocol, shared vs per
protocol) in one folder (``results/benchmarks/``), with the folder's ``README.md`` (commands, commit, machine), read
into the page's "Speed" section beside the speed targets (:mod:`.speed_targets`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.results.speed_targets import Measure, SpeedTargets, TargetResult, check_targets
from mmea_lightning.results.tables import markdown_table

__all__ = ["BenchmarkFile", "Benchmarks", "load_benchmarks", "speed_section"]

MISSING = "—"
README = "README.md"
#: the keys every row of a benchmark's file must have; a file's rows decide which benchmark wrote it
ROW_KEYS: Mapping[str, tuple[str, ...]] = {
    "bench_aligners": ("model", "dataset", "modalities", "threads", "load_s", "s_per_epoch", "cpu_s_per_epoch",
                       "epoch_s_min", "epoch_s_max", "val_s", "val_ckpt_s", "test_s", "max_epochs", "projected_min",
                       "peak_rss_gib"),
    "bench_eval": ("dataset", "model", "path", "threads", "dim", "test_links", "kg1", "kg2", "eval_s", "eval_cpu_s",
                   "eval_extra_mib"),
}
SUMMARY_KEYS: tuple[str, ...] = ("dataset", "model", "shared_s", "per_protocol_s", "shared_cpu_s",
                                 "per_protocol_cpu_s", "shared_extra_mib", "per_protocol_extra_mib", "speedup",
                                 "cpu_speedup", "max_metric_diff")
#: the profile of a bench_aligners row (``--profile``)
PROFILE_KEYS: tuple[str, ...] = ("epoch_s", "steps", "phases_s", "modules_s", "module_calls", "operators")
_FIX = {"bench_aligners": "write it with benchmarks/bench_aligners.py --json.",
        "bench_eval": "write it with benchmarks/bench_eval.py --json."}


@dataclass(frozen=True)
class BenchmarkFile:
    """One ``--json`` file: its name, the benchmark that wrote it, its ``args``, its rows (each with ``file``) and,
    for ``bench_eval``, its per (dataset, model) ``summary``."""

    name: str
    benchmark: str
    args: Mapping
    rows: tuple[Mapping, ...]
    summary: tuple[Mapping, ...] = ()


@dataclass(frozen=True)
class Benchmarks:
    """The folder's files (by name) and its ``README.md`` text (``None`` when there is none)."""

    folder: Path
    files: tuple[BenchmarkFile, ...]
    readme: str | None

    def rows(self, benchmark: str) -> list[Mapping]:
        return [row for f in self.files if f.benchmark == benchmark for row in f.rows]

    def by_benchmark(self) -> dict[str, list[Mapping]]:
        return {name: self.rows(name) for name in ROW_KEYS}


def _benchmark_of(path: Path, rows: Sequence) -> str:
    if rows and all(isinstance(r, dict) for r in rows):
        if all("s_per_epoch" in r for r in rows):
            return "bench_aligners"
        if all("eval_s" in r and "path" in r for r in rows):
            return "bench_eval"
    raise DataFormatError(path, "its rows are neither bench_aligners rows (with s_per_epoch) nor bench_eval rows "
                          "(with path and eval_s), or the file has no rows.",
                          fix="write it with benchmarks/bench_aligners.py --json or benchmarks/bench_eval.py --json.")


def _check(path: Path, records: Sequence, keys: Sequence[str], what: str, fix: str) -> None:
    for i, record in enumerate(records):
        missing = [k for k in keys if k not in record]
        if missing:
            raise DataFormatError(path, f"{what} {i} lacks {missing}.", fix=fix)


def _read(path: Path) -> BenchmarkFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"not JSON ({err.msg}).", line=err.lineno,
                              fix="write it with benchmarks/bench_aligners.py or bench_eval.py --json.") from err
    if not isinstance(data, dict) or not isinstance(data.get("args"), dict) or not isinstance(data.get("rows"), list):
        raise DataFormatError(path, 'expected {"args": {...}, "rows": [...]}.', line=1,
                              fix="write it with benchmarks/bench_aligners.py or bench_eval.py --json.")
    benchmark = _benchmark_of(path, data["rows"])
    _check(path, data["rows"], ROW_KEYS[benchmark], "row", _FIX[benchmark])
    for i, row in enumerate(data["rows"]):
        if row.get("profile") is not None:
            _check(path, [row["profile"]], PROFILE_KEYS, f"row {i}'s profile", _FIX[benchmark])
    summary = ()
    if benchmark == "bench_eval":
        if not isinstance(data.get("summary"), list):
            raise DataFormatError(path, "a bench_eval file without its summary list.", fix=_FIX[benchmark])
        _check(path, data["summary"], SUMMARY_KEYS, "summary entry", _FIX[benchmark])
        summary = tuple(data["summary"])
    return BenchmarkFile(name=path.name, benchmark=benchmark, args=data["args"],
                         rows=tuple({**row, "file": path.name} for row in data["rows"]), summary=summary)


def load_benchmarks(folder: str | Path) -> Benchmarks:
    """Every ``*.json`` file of ``folder`` (sorted by name) and its ``README.md``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"benchmarks folder {folder} does not exist (bench_aligners.py / bench_eval.py "
                                "--json files)")
    files = tuple(_read(path) for path in sorted(folder.glob("*.json")))
    if not files:
        raise FileNotFoundError(f"benchmarks folder {folder} holds no *.json file (bench_aligners.py / "
                                "bench_eval.py --json)")
    readme = folder / README
    return Benchmarks(folder=folder, files=files,
                      readme=readme.read_text(encoding="utf-8") if readme.is_file() else None)


# --------------------------------------------------------------------------- cells


def _num(value, digits: int = 2) -> str:
    if value is None or isinstance(value, bool) or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}"


def _share(value: float, whole: float) -> str:
    return f"{value / whole:.1%}" if whole else MISSING


def _args_line(file: BenchmarkFile) -> str:
    args = file.args
    if file.benchmark == "bench_aligners":
        parts = [f"epochs timed {args.get('epochs', MISSING)} after {args.get('warmup', MISSING)} warm-up",
                 f"threads {args.get('threads', MISSING)}", f"profile {'yes' if args.get('profile') else 'no'}",
                 f"feature cache {'fresh' if args.get('fresh_cache') else 'reused'}"]
        extra = [*(f"--set {s}" for s in args.get("sets") or ()), *(f"--override {o}" for o in args.get("override")
                                                                      or ())]
    else:
        parts = [f"threads {args.get('threads', MISSING)}", f"repeat {args.get('repeat') or MISSING}",
                 f"checkpoint {args.get('checkpoint') or 'none (initial weights, seed 0)'}"]
        extra = []
    for key, label in (("commit", "commit"), ("cpus", "CPUs")):
        if args.get(key) is not None:
            parts.append(f"{label} {args[key]}")
    if args.get("loadavg"):
        parts.append("load average at the start " + " / ".join(f"{x:.2f}" for x in args["loadavg"]))
    parts += [f"`{x}`" for x in extra]
    if args.get("converted_from"):
        parts.append(f"converted from {args['converted_from']}")
    return f"- `{file.name}` (`benchmarks/{file.benchmark}.py --json`): " + ", ".join(parts) + "."


def aligners_table(rows: Sequence[Mapping]) -> str:
    header = ["model", "dataset", "modalities", "threads", "load s", "s/epoch", "cpu s/epoch", "min", "max", "val s",
              "+ckpt s", "test s", "epochs", "projected min", "peak GiB"]
    body = [[r["model"], r["dataset"], r["modalities"], r["threads"], _num(r["load_s"], 1), _num(r["s_per_epoch"], 3),
             _num(r["cpu_s_per_epoch"], 3), _num(r["epoch_s_min"], 3), _num(r["epoch_s_max"], 3), _num(r["val_s"], 1),
             _num(r["val_ckpt_s"], 1), _num(r["test_s"], 1), r["max_epochs"], _num(r["projected_min"], 1),
             _num(r["peak_rss_gib"], 2)] for r in rows]
    return markdown_table(header, body)


def eval_table(files: Sequence[BenchmarkFile]) -> str:
    header = ["dataset", "model", "threads", "dim", "test links", "KG1 / KG2 entities", "shared s", "per-protocol s",
              "shared CPU s", "per-protocol CPU s", "shared extra MiB", "per-protocol extra MiB", "speed-up",
              "CPU speed-up", "max metric diff"]
    body = []
    for file in files:
        for s in file.summary:
            row = next((r for r in file.rows if r["dataset"] == s["dataset"] and r["model"] == s["model"]
                        and r["path"] == "shared"), {})
            diff = s["max_metric_diff"]
            body.append([s["dataset"], s["model"], row.get("threads", MISSING), row.get("dim", MISSING),
                         f"{row['test_links']:,}" if "test_links" in row else MISSING,
                         f"{row['kg1']:,} / {row['kg2']:,}" if "kg1" in row else MISSING,
                         _num(s["shared_s"]), _num(s["per_protocol_s"]), _num(s["shared_cpu_s"]),
                         _num(s["per_protocol_cpu_s"]), _num(s["shared_extra_mib"], 0),
                         _num(s["per_protocol_extra_mib"], 0), f"{s['speedup']:.1f}x", f"{s['cpu_speedup']:.1f}x",
                         MISSING if diff is None else f"{diff:.3g}"])
    return markdown_table(header, body)


def profile_section(row: Mapping, min_share: float = 0.005) -> str:
    """Where the profiled epoch of ``row`` went: phases, aligner sub-modules (``>= min_share`` of the epoch; nested
    ones indented) and the top operators by self CPU time."""
    prof = row["profile"]
    epoch = prof["epoch_s"]
    intro = (f"One training epoch of {prof['steps']} step(s), {epoch:.3f} s under the profiler (timed epochs: "
             f"{row['s_per_epoch']:.3f} s; `{row['file']}`).")
    phases = markdown_table(["phase", "seconds", "share"],
                            [[name, _num(s, 3), _share(s, epoch)]
                             for name, s in sorted(prof["phases_s"].items(), key=lambda kv: -kv[1])])
    modules = prof["modules_s"]
    body = [["&nbsp;" * 4 * name.count(".") + f"`{name}`", _num(modules[name], 3), _share(modules[name], epoch),
             calls] for name, calls in prof["module_calls"].items() if modules.get(name, 0.0) >= min_share * epoch]
    rest = prof["phases_s"].get("forward + loss", 0.0) - sum(s for n, s in modules.items() if "." not in n)
    body.append(["(training loss outside sub-modules: inline losses, gathers)", _num(rest, 3), _share(rest, epoch),
                 MISSING])
    module_table = markdown_table(["forward: aligner sub-module (inclusive)", "seconds", "share", "calls"], body)
    operators = markdown_table(["operator (self CPU time, all threads, forward and backward)", "seconds", "share",
                                "calls"],
                               [[f"`{op['name']}`", _num(op["self_s"], 3), f"{op['share']:.1%}", op["calls"]]
                                for op in prof["operators"]])
    return "\n\n".join([intro, phases, module_table, operators])


def _bound_cell(result: TargetResult) -> str:
    bound, unit = result.target.bound, result.target.unit
    limit = MISSING if result.limit is None else f"{result.limit:.2f} {unit}"
    if bound.factor == 1.0 and not isinstance(bound.of, Measure):
        return f"≤ {limit}"
    of = (f"{bound.of.label} ({_num(result.reference, 3)} {unit})" if isinstance(bound.of, Measure)
          else f"{bound.of_what} ({bound.of:g} {unit})")
    return f"≤ {bound.factor:g} × {of} = {limit}"


def targets_table(results: Sequence[TargetResult]) -> str:
    header = ["target", "what", "source", "measured", "bound", "met"]
    body = [[r.target.name, r.target.what, r.target.source.key,
             f"{_num(r.value, 3)} {r.target.unit} ({r.target.measured.label})" if r.value is not None
             else f"not measured ({r.target.measured.label})", _bound_cell(r),
             MISSING if r.met is None else ("yes" if r.met else "no")] for r in results]
    return markdown_table(header, body)


def _readme_body(text: str) -> str:
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip()


def speed_section(benchmarks: Benchmarks, targets: SpeedTargets | None) -> str:
    """The Markdown of the page's "Speed" section (its subsections are ``###``)."""
    folder = PurePath(benchmarks.folder).as_posix()
    parts = [f"Measured by `benchmarks/bench_aligners.py --json` and `benchmarks/bench_eval.py --json` (files in "
             f"`{folder}`; the commands, the code's commit and the machine are under \"How it was measured\"). "
             "Seconds are wall time unless marked CPU; a machine shared with other jobs inflates them.",
             "\n".join(_args_line(f) for f in benchmarks.files)]
    if targets is not None:
        parts += ["### Targets",
                  f"From `{PurePath(targets.path).as_posix()}` (each with its source), checked against the figures "
                  "below; `met`: the measured figure is within the bound (— where a figure is not measured).",
                  targets_table(check_targets(targets, benchmarks.by_benchmark()))]
        sources = list(dict.fromkeys(t.source for t in targets.targets))
        parts.append("Sources:\n\n" + "\n".join(f"- `{s.key}`: {s.title}. Where: {s.where}." for s in sources))
    aligners = benchmarks.rows("bench_aligners")
    if aligners:
        parts += ["### Training epochs (bench_aligners)",
                  "Per model and pair, one process each through the real training entry point: `load s` reads the "
                  "pair and its cached features; `s/epoch` is the mean of the timed epochs (validation excluded; "
                  "`cpu s/epoch` in process CPU seconds; `min` / `max` over the timed epochs); `val s` one validation "
                  "check, `+ckpt s` with its checkpoint writes; `test s` one test evaluation; `projected min` the "
                  "config's full run (`epochs` epochs, a `+ckpt s` every validation interval, one test).",
                  aligners_table(aligners)]
    evals = [f for f in benchmarks.files if f.benchmark == "bench_eval"]
    if evals:
        parts += ["### Test evaluation, all six protocols (bench_eval)",
                  "One test evaluation of all six protocols: `shared` computes every cosine once and shares it "
                  "between protocols and directions; `per-protocol` ranks each protocol on its own (the evaluation "
                  "before issue 29). `extra MiB`: what the evaluation added to the resident memory it started from; "
                  "`speed-up`: per-protocol / shared seconds; `max metric diff`: the largest difference between the "
                  "two paths' metrics (0: identical ranks).",
                  eval_table(evals)]
    for row in aligners:
        if row.get("profile"):
            parts += [f"### Profile: {row['model']} / {row['dataset']}", profile_section(row)]
    parts.append("### How it was measured")
    parts.append(_readme_body(benchmarks.readme) if benchmarks.readme else
                 f"No `{README}` in `{folder}`: the commands, commit and machine are not recorded.")
    return "\n\n".join(parts)
