"""Aggregate finished runs into the papers' tables and plots.

    python -m mmea_lightning.report multirun/2026-11-21/12-50-15-872315 [more dirs ...] [--out DIR]
    python -m mmea_lightning.report results/anchors results/grid --published results/published.yaml \
        --markdown docs/results.md --seed-quality results/seeds --benchmarks results/benchmarks \
        --speed-targets results/speed_targets.yaml

Reads every ``metrics.json`` (with its ``config.yaml``) under the given directories and writes into ``--out``
(default: ``<first dir>/report``):

* ``runs.csv`` -- one row per run (settings, its ``setting`` id, every protocol's metrics, seconds per epoch, peak
  memory);
* ``main_table.md`` / ``.csv`` -- method x dataset x seed ratio (and swept hyper-parameters), Hits@1/5/10 and MRR
  as mean ± std over repeated seeds (``n`` runs each). Only repetitions are pooled: runs whose settings and data
  (``run_identity.json``: the resolved config without output paths, and the content digest of every input file)
  agree except for ``seed`` / ``split_seed``. Rows that agree in the table's columns but not in their setting are
  kept apart, with a ``setting`` column and a note naming what differs (data files, modalities, any config key);
* ``ablation_table.md`` / ``.csv`` -- when runs carry an ``ablation`` setting;
* ``seed_quality.md`` / ``.csv`` -- per-stage seed count, precision and coverage of seed generators that report it;
* ``metrics_vs_<axis>.png`` -- Hits@1 and MRR against θ, α, seed ratio or PSQE cluster count, for every axis the
  runs vary.

The Markdown tables are also printed.

With ``--markdown PAGE`` (and ``--published FILE``, the published figures: ``results/published.yaml``) it writes the
results page instead (:mod:`mmea_lightning.results.page`): ``PAGE`` and its plots in a folder named like it
(``docs/results.md`` -> ``docs/results/*.png``), generated from the runs alone, the same bytes on every run; the
report files above are then written only when ``--out`` is given. ``--seed-quality DIR`` adds the pseudo-seed quality
table of the ``benchmarks/bench_seeds.py --json`` files in ``DIR``. ``--benchmarks DIR`` adds the "Speed" section: the
``benchmarks/bench_aligners.py --json`` and ``benchmarks/bench_eval.py --json`` files in ``DIR`` (and its
``README.md``: commands, commit, machine), with the speed targets of ``--speed-targets FILE``
(``results/speed_targets.yaml``, required with ``--benchmarks``) checked against them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from mmea_lightning.atomic_files import write_text_atomic
from mmea_lightning.data.errors import DataFormatError
from mmea_lightning.results.collect import NESTED, collect, seed_quality
from mmea_lightning.results.page import command_line, page_plots, page_rows, render_page
from mmea_lightning.results.plots import plot_axes
from mmea_lightning.results.published import load_published
from mmea_lightning.results.seed_benchmarks import load_seed_benchmarks
from mmea_lightning.results.speed import load_benchmarks
from mmea_lightning.results.speed_targets import load_speed_targets
from mmea_lightning.results.tables import ablation_table, main_table, seed_quality_table


def build_page(roots: Sequence[str | Path], published: str | Path, page: str | Path, protocol: str = "test",
               seed_folder: str | Path | None = None, benchmark_folder: str | Path | None = None,
               speed_targets: str | Path | None = None) -> dict:
    """Write the results page ``page`` and its plots (in ``<page without suffix>/``) from the runs under ``roots``
    and the published figures in ``published`` (plus the seed-quality files of ``seed_folder``, the benchmark files
    of ``benchmark_folder`` and the speed targets of ``speed_targets``, when given); returns ``{"page": path,
    "plots": [paths], "num_runs": n}``."""
    page = Path(page)
    figures = load_published(published)
    runs = collect(roots)
    plots = page_plots(page_rows(runs, figures, protocol), runs, figures, protocol)
    folder = page.with_suffix("")
    if plots:
        folder.mkdir(parents=True, exist_ok=True)
    written = [plot.draw(folder / plot.name) for plot in plots]
    seed_rows = load_seed_benchmarks(seed_folder) if seed_folder is not None else None
    benchmarks = load_benchmarks(benchmark_folder) if benchmark_folder is not None else None
    targets = load_speed_targets(speed_targets) if speed_targets is not None else None
    command = command_line(roots, published, page, protocol, seed_folder, benchmark_folder, speed_targets)
    text = render_page(runs, figures, command=command, roots=roots, plot_folder=folder.name, plots=plots,
                       protocol=protocol, seed_rows=seed_rows, seed_folder=seed_folder, benchmarks=benchmarks,
                       speed_targets=targets)
    page.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(page, text)
    return {"page": page, "plots": written, "num_runs": len(runs)}


def build_report(roots: list[str | Path], out_dir: str | Path | None = None, protocol: str = "test",
                 write: bool = True) -> dict:
    """Write the report files (unless ``write`` is false); returns ``{name: path}`` of what was written plus the
    Markdown texts."""
    runs = collect(roots)
    written: dict[str, object] = {}
    if not write:
        written.update(main_markdown=main_table(runs, protocol)[1], num_runs=len(runs))
        ablation = ablation_table(runs, protocol)
        if ablation is not None:
            written["ablation_markdown"] = ablation[1]
        quality = seed_quality_table(seed_quality(roots))
        if quality is not None:
            written["seed_quality_markdown"] = quality[1]
        return written
    out = Path(out_dir) if out_dir else Path(roots[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "runs.csv", runs.drop(columns=list(NESTED), errors="ignore").to_csv(index=False))
    written["runs"] = out / "runs.csv"
    table, markdown = main_table(runs, protocol)
    write_text_atomic(out / "main_table.csv", table.to_csv(index=False))
    write_text_atomic(out / "main_table.md", markdown + "\n")
    written.update(main_table=out / "main_table.md", main_markdown=markdown)
    ablation = ablation_table(runs, protocol)
    if ablation is not None:
        write_text_atomic(out / "ablation_table.csv", ablation[0].to_csv(index=False))
        write_text_atomic(out / "ablation_table.md", ablation[1] + "\n")
        written.update(ablation_table=out / "ablation_table.md", ablation_markdown=ablation[1])
    quality = seed_quality_table(seed_quality(roots))
    if quality is not None:
        write_text_atomic(out / "seed_quality.csv", quality[0].to_csv(index=False))
        write_text_atomic(out / "seed_quality.md", quality[1] + "\n")
        written.update(seed_quality=out / "seed_quality.md", seed_quality_markdown=quality[1])
    written["plots"] = plot_axes(runs, out, protocol)
    written["num_runs"] = len(runs)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmea_lightning.report", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", help="multirun / run directories to aggregate")
    parser.add_argument("--out", default=None, help="output directory (default: <first dir>/report)")
    parser.add_argument("--protocol", default="test",
                        help="evaluation protocol of the tables: test (default), test_csls, test_all, ...")
    parser.add_argument("--markdown", default=None, metavar="PAGE",
                        help="write the results page PAGE (e.g. docs/results.md) and its plots (docs/results/*.png); "
                        "needs --published; the report files are then written only with --out")
    parser.add_argument("--published", default=None, metavar="FILE",
                        help="the published figures set beside the runs on the page (results/published.yaml)")
    parser.add_argument("--seed-quality", default=None, metavar="DIR",
                        help="with --markdown: add the pseudo-seed quality table from the bench_seeds.py --json files "
                        "in DIR (results/seeds)")
    parser.add_argument("--benchmarks", default=None, metavar="DIR",
                        help="with --markdown: add the Speed section from the bench_aligners.py / bench_eval.py --json "
                        "files (and README.md) in DIR (results/benchmarks); needs --speed-targets")
    parser.add_argument("--speed-targets", default=None, metavar="FILE",
                        help="with --benchmarks: the speed targets checked on the page (results/speed_targets.yaml)")
    args = parser.parse_args(argv)
    if args.markdown and not args.published:
        parser.error("--markdown needs --published (the published figures, e.g. results/published.yaml)")
    if (args.benchmarks or args.speed_targets) and not args.markdown:
        parser.error("--benchmarks and --speed-targets need --markdown (they add a section to the results page)")
    if bool(args.benchmarks) != bool(args.speed_targets):
        parser.error("--benchmarks and --speed-targets go together (e.g. --benchmarks results/benchmarks "
                     "--speed-targets results/speed_targets.yaml)")
    try:
        page = (build_page(args.dirs, args.published, args.markdown, args.protocol, args.seed_quality,
                           args.benchmarks, args.speed_targets) if args.markdown else None)
        written = build_report(args.dirs, args.out, args.protocol, write=args.out is not None or page is None)
    except (FileNotFoundError, KeyError, DataFormatError) as err:
        parser.error(str(err))
    print(f"{written['num_runs']} runs; protocol {args.protocol}\n")
    print(written["main_markdown"])
    for name in ("ablation_markdown", "seed_quality_markdown"):
        if name in written:
            print("\n" + written[name])
    if "runs" in written:
        print(f"\nwritten to {Path(written['runs']).parent}: "
              + ", ".join(Path(p).name for p in [written["runs"], written["main_table"], *written["plots"]]))
    if page is not None:
        print(f"\nresults page: {page['page']}" + "".join(f", {p}" for p in page["plots"]))


if __name__ == "__main__":
    main()
