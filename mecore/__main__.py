"""Command line: ``python -m mecore <command>``, the same jobs as the notebooks, without make.

  data generate   write the embedded synthetic datasets of a profile
  data check      load a dataset (real or synthetic), print counts, durations and repairs
  notebooks       execute the numbered notebooks with papermill into the run folder
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
    """Execute notebooks with papermill into ``runs/notebooks/<profile>/``; figures go to ``figures/``."""
    import papermill

    profile = paths.profile(profile)
    out_dir = paths.runs_dir() / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = notebook_paths(only)
    if not notebooks:
        raise SystemExit(f"no notebooks matched {only!r} in {NOTEBOOKS}")
    os.environ["MECORE_PROFILE"] = profile  # kernels inherit it
    for notebook in notebooks:
        print(f"--- {notebook.name} ({profile})", flush=True)
        papermill.execute_notebook(str(notebook), str(out_dir / notebook.name), cwd=str(notebook.parent),
                                   parameters={"profile": profile, **(parameters or {})}, progress_bar=False,
                                   kernel_name="python3")
    return out_dir


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
                         results_dir=args.results)
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
                    "intervals as CSV and a timeline figure. It never trains.")
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

    from .loso import add_cli as add_loso

    from .plan import add_cli as add_plan

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
