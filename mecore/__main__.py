"""Command line: ``python -m mecore <command>``, the same jobs as the notebooks, without make.

  data generate   write the embedded synthetic datasets of a profile
  data check      load a dataset (real or synthetic), print counts, durations and repairs
  notebooks       execute the numbered notebooks with papermill into the run folder
  book            the executed notebooks as a static HTML site (runs/book/<profile>/)
  loso            leave-one-subject-out evaluation of a registered model, folds fanned out over Dask
  plan            what a LOSO run will cost (RAM, device memory, cache, time), measured on a short trial
  spot            spot expressions in your own video (file or frame folder) with a model trained by loso
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import paths

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _data_generate(args) -> int:
    from .data.synthetic import DATASETS, ensure_synthetic

    root = ensure_synthetic(args.profile, seed=args.seed, datasets=args.dataset or DATASETS, force=args.force)
    print(f"synthetic datasets ({paths.data_profile(args.profile)}) in {root}")
    return 0


def _data_check(args) -> int:
    from .data import DatasetError, load_dataset
    from .data.summary import describe

    bad = [item for item in args.component_root if "=" not in item]
    if bad:
        raise DatasetError(f"--component-root {bad[0]!r}: expected NAME=PATH, e.g. casme2=/data/CASME2")
    component_roots = dict(item.split("=", 1) for item in args.component_root)
    options = {"component_roots": component_roots} if component_roots else {}
    if args.workbook is not None:
        if args.dataset.removeprefix("synth_") in ("smic_hs", "smic_vis", "smic_nir", "cde"):
            raise DatasetError(f"--workbook {args.workbook}: {args.dataset} has no annotation workbook to choose "
                               f"(SMIC: folder names; CDE: the label file given as --root)")
        options["workbook"] = args.workbook
    dataset = load_dataset(args.dataset, root=args.root, profile=args.profile,
                           annotations_only=args.annotations_only, **options)
    if not args.annotations_only and not args.no_frame_check:
        dataset.verify_frames()  # every frame file: cut short, or of another size than the video's others
    print(describe(dataset, with_frames=not args.annotations_only))
    return 0


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose names start with ``only``."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(prefix) for prefix in only)]
    return found


def run_notebooks(profile: str | None = None, only: list[str] | None = None, parameters: dict | None = None) -> Path:
    """Execute notebooks with papermill into ``runs/notebooks/<profile>/``; figures go to ``figures/``.

    Prints ``[i/n] name`` with the elapsed time before each notebook (and papermill's cell progress bar on a
    terminal), and at the end the table of :func:`timing_tables`, also saved as ``timings.csv`` and ``timings.md``
    in the run folder: each notebook's wall seconds and every LOSO run it made (each kernel appends one line per
    :func:`mecore.loso.run_loso` call to the file named by ``$MECORE_TIMINGS``, which is set per notebook here).
    """
    import time

    import papermill

    from .loso import TIMINGS_ENV

    profile = paths.profile(profile)
    out_dir = paths.runs_dir() / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = notebook_paths(only)
    if not notebooks:
        raise SystemExit(f"no notebooks matched {only!r} in {NOTEBOOKS}")
    os.environ["MECORE_PROFILE"] = profile  # kernels inherit it
    lines_dir = out_dir / ".timings"
    lines_dir.mkdir(exist_ok=True)
    ran: list[dict] = []
    started = time.perf_counter()
    previous = os.environ.get(TIMINGS_ENV)
    try:
        for index, notebook in enumerate(notebooks, 1):
            label = f"[{index}/{len(notebooks)}] {notebook.name}"
            print(f"--- {label} ({profile}), {_clock(time.perf_counter() - started)} elapsed", flush=True)
            lines = lines_dir / f"{notebook.stem}.jsonl"
            lines.unlink(missing_ok=True)
            os.environ[TIMINGS_ENV] = str(lines)  # the kernel papermill starts inherits it
            row = {"notebook": notebook.name, "seconds": None, "status": "failed", "lines": lines}
            ran.append(row)
            clock = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(notebook), str(out_dir / notebook.name), cwd=str(notebook.parent),
                    parameters={"profile": profile, **(parameters or {})}, kernel_name="python3",
                    progress_bar={"desc": label, "leave": False} if sys.stderr.isatty() else False)
                row["status"] = "ok"
            finally:
                row["seconds"] = time.perf_counter() - clock
                print(f"    {notebook.name}: {row['status']} in {_clock(row['seconds'])}", flush=True)
    finally:
        if previous is None:
            os.environ.pop(TIMINGS_ENV, None)
        else:
            os.environ[TIMINGS_ENV] = previous
        runs = {row["notebook"]: read_timing_lines(row["lines"]) for row in ran}
        table, loso = timing_tables([{k: row[k] for k in ("notebook", "seconds", "status")} for row in ran], runs)
        text = format_timings(table, loso, profile, time.perf_counter() - started)
        save_timings(out_dir, table, loso, text)
        print(text + f"\n(saved as {out_dir / 'timings.md'} and timings.csv)", flush=True)
    return out_dir


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def read_timing_lines(path: Path) -> list[dict]:
    """The JSON lines :func:`mecore.loso.record_timing` appended to ``path`` (none if it does not exist);
    a line cut short by a killed kernel is skipped."""
    import json

    if not Path(path).exists():
        return []
    found = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return found


LOSO_COLUMNS = ["notebook", "model", "dataset", "profile", "run", "seconds", "status", "folds", "folds_computed"]


def timing_tables(notebooks: list[dict], runs: dict[str, list[dict]]):
    """Two tables: per notebook (``notebook``, ``seconds``, ``status``, LOSO runs made, of them computed and
    reused, their seconds, share of the total) and per LOSO run (``notebook``, model, dataset, profile, ``run``
    folder relative to ``runs/loso``, seconds, ``status`` computed / resumed / reused, folds, folds computed),
    the longest first. ``notebooks``: dicts with ``notebook``, ``seconds``, ``status``; ``runs``: the timing
    lines of each notebook by name."""
    import pandas as pd

    rows = []
    for name, lines in runs.items():
        for line in lines:
            folder = Path(line.get("folder", ""))
            run = "/".join(folder.parts[-3:]) if len(folder.parts) >= 3 else str(folder)
            rows.append({"notebook": name, "model": line.get("model"), "dataset": line.get("dataset"),
                         "profile": line.get("profile"), "run": run, "seconds": float(line.get("seconds", 0.0)),
                         "status": line.get("status"), "folds": line.get("folds"),
                         "folds_computed": line.get("folds_computed")})
    loso = pd.DataFrame(rows, columns=LOSO_COLUMNS)
    loso = loso.sort_values("seconds", ascending=False, kind="stable").reset_index(drop=True)
    table = pd.DataFrame(notebooks, columns=["notebook", "seconds", "status"])
    per = loso.groupby("notebook")
    table["loso_runs"] = table["notebook"].map(per.size()).fillna(0).astype(int)
    table["computed"] = table["notebook"].map(per["status"].apply(lambda s: int((s != "reused").sum())))
    table["computed"] = table["computed"].fillna(0).astype(int)
    table["reused"] = table["loso_runs"] - table["computed"]
    table["loso_seconds"] = table["notebook"].map(per["seconds"].sum()).fillna(0.0)
    total = table["seconds"].sum()
    table["share"] = (table["seconds"] / total if total else table["seconds"] * 0).round(3)
    return table, loso


def format_timings(table, loso, profile: str, wall: float | None = None) -> str:
    """The two tables of :func:`timing_tables` as Markdown."""
    def markdown(frame) -> str:
        frame = frame.copy()
        for column in ("seconds", "loso_seconds"):
            if column in frame:
                frame[column] = frame[column].map(lambda s: f"{s:.1f}")
        if "share" in frame:
            frame["share"] = frame["share"].map(lambda s: f"{100 * s:.0f}%")
        head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
        body = ["| " + " | ".join("" if v is None else str(v) for v in row) + " |"
                for row in frame.itertuples(index=False)]
        return "\n".join([head, *body])

    total = wall if wall is not None else float(table["seconds"].sum())
    parts = [f"## Where the time went: notebooks of profile {profile}, {_clock(total)} in all", "",
             markdown(table), "", f"## LOSO runs ({len(loso)}; computed: trained or predicted now, "
             "resumed: some folds were finished, reused: every fold read from a finished run)", ""]
    parts.append(markdown(loso) if len(loso) else "(none)")
    return "\n".join(parts) + "\n"


def save_timings(out_dir: Path, table, loso, text: str) -> None:
    """``timings.md`` (the printed tables) and ``timings.csv`` (one row per notebook, ``kind`` notebook, then one
    per LOSO run, ``kind`` loso) in ``out_dir``."""
    import pandas as pd

    (out_dir / "timings.md").write_text(text, encoding="utf-8")
    rows = pd.concat([table.assign(kind="notebook"), loso.assign(kind="loso")], ignore_index=True)
    for column in ("loso_runs", "computed", "reused", "folds", "folds_computed"):
        rows[column] = rows[column].astype("Int64")  # counts stay integers beside the other kind's blanks
    columns = ["kind", *dict.fromkeys([*table.columns, *loso.columns])]
    rows[columns].to_csv(out_dir / "timings.csv", index=False)


def _notebooks(args) -> int:
    out_dir = run_notebooks(args.profile, args.only)
    print(f"executed notebooks are in {out_dir}; figures in {paths.figures_dir()}")
    return 0


def _spot(args) -> int:
    from .data import DatasetError
    from .models import UnknownModelError
    from .spot import SpotError, spot
    from .train import CheckpointError

    try:
        intervals = spot(args.video, args.model, dataset=args.dataset, root=args.root, profile=args.profile,
                         subject=args.subject, checkpoint=args.checkpoint, fps=args.fps, out_dir=args.out,
                         results_dir=args.results, recogniser=args.recogniser)
    except (SpotError, DatasetError, UnknownModelError, CheckpointError) as error:
        print(f"mecore spot: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    counts = intervals["type"].value_counts()
    print(intervals.to_string(index=False) if len(intervals) else "no interval spotted")
    print(f"{len(intervals)} intervals ({counts.get('micro', 0)} micro, {counts.get('macro', 0)} macro) by "
          f"{args.model}, fold {intervals.attrs['subject']} of {intervals.attrs['run']}\n"
          f"CSV: {intervals.attrs['csv']}\nfigure: {intervals.attrs['figure']}")
    return 0


def _add_spot(commands) -> None:
    parser = commands.add_parser(
        "spot", help="spot expressions in your own video with a model trained by loso",
        description="Spot micro- and macro-expressions in a video file (anything OpenCV reads) or a folder of "
                    "frame images with a spotting model that 'loso' (or a notebook) trained; writes the "
                    "intervals as CSV and a timeline figure. It never trains the spotter.")
    parser.add_argument("video", type=Path, help="a video file (.mp4, .avi, ...) or a folder of frame images")
    parser.add_argument("--model", required=True, help="a spotting model, e.g. mdmd, mesnet_crn, stsnet_sw")
    parser.add_argument("--checkpoint", type=Path,
                        help="a LOSO run folder runs/loso/<model>/<dataset>/<profile>-<key> (default: the run of "
                             "--model on --dataset under --profile, seed 0)")
    parser.add_argument("--dataset", default="synth_casme_sq", help="the dataset the model was trained on")
    parser.add_argument("--root", type=Path, help="folder of the licensed copy it was trained on (real datasets)")
    parser.add_argument("--profile", choices=paths.PROFILES, help="default: $MECORE_PROFILE or 'default'")
    parser.add_argument("--subject", help="whose LOSO fold's model to use (default: the first finished)")
    parser.add_argument("--fps", type=float, help="frame rate (default: the file's; a frame folder: the dataset's)")
    parser.add_argument("--out", type=Path, help="output folder (default: <mecore home>/runs/spot)")
    parser.add_argument("--results", type=Path, help="LOSO results folder (default: <mecore home>/runs/loso)")
    parser.add_argument("--recogniser", choices=("fr", "fr_basic_inception"),
                        help="also say each interval's emotion (negative, positive, surprise) and its probability, "
                             "with this recogniser trained under the same LOSO fold (trained on first use, then "
                             "reloaded)")
    parser.set_defaults(handler=_spot)


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASET_NAMES
    from .data.synthetic import DATASETS

    parser = argparse.ArgumentParser(prog="python -m mecore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate or check datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    generate = data_commands.add_parser("generate", help="write the embedded synthetic datasets",
                                        description="Write the synthetic datasets in the real on-disk layouts "
                                                    f"under {paths.home() / 'data' / 'synthetic'}/<profile>/.")
    generate.add_argument("--profile", choices=paths.DATA_PROFILES, default=None,
                          help="dataset sizes (default: $MECORE_PROFILE or 'default')")
    generate.add_argument("--dataset", action="append", choices=DATASETS,
                          help="only this dataset folder (repeatable; default: all)")
    generate.add_argument("--seed", type=int, default=None,
                          help="the generator's seed (default: an existing set's own, else 0)")
    generate.add_argument("--force", action="store_true", help="regenerate even if present")
    generate.set_defaults(handler=_data_generate)

    check = data_commands.add_parser(
        "check", help="load a dataset and report counts, durations and repairs",
        description="Load a real or synthetic dataset through its loader; print counts per subject and type, "
                    "duration statistics and every repair the loader made. Exits non-zero on bad input.")
    check.add_argument("--dataset", required=True, choices=DATASET_NAMES,
                       help="real names need --root; synth_* names use the embedded synthetic sets")
    check.add_argument("--root", type=Path, help="folder of your licensed copy (label file or folder for cde)")
    check.add_argument("--annotations-only", action="store_true", help="check the workbook without frames")
    check.add_argument("--component-root", action="append", default=[], metavar="NAME=PATH",
                       help="cde only: casme2=PATH, samm=PATH, smic=PATH")
    check.add_argument("--profile", choices=paths.DATA_PROFILES, default=None, help="synthetic set size")
    check.add_argument("--workbook", type=Path,
                       help="the annotation workbook to read (default: the newest release found in the root)")
    check.add_argument("--no-frame-check", action="store_true",
                       help="skip reading every frame file's header and end (truncated frames, mixed sizes)")
    check.set_defaults(handler=_data_check)

    notebooks = commands.add_parser("notebooks", help="execute the numbered notebooks with papermill",
                                    description="Execute notebooks/NN_*.ipynb in order into "
                                                "runs/notebooks/<profile>/; figures are written to figures/.")
    notebooks.add_argument("--profile", choices=paths.PROFILES, default=None)
    notebooks.add_argument("--only", nargs="+", metavar="NN", help="notebook number prefixes, e.g. 00 01")
    notebooks.set_defaults(handler=_notebooks)

    from .book import add_cli as add_book
    from .loso import add_cli as add_loso

    from .plan import add_cli as add_plan

    add_book(commands)
    add_loso(commands)
    add_plan(commands)
    _add_spot(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .data import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
