"""Does a code change leave LOSO results unchanged? Run models under the current code and compare each run's
``predictions.csv``, byte for byte, with the earlier runs of the same model, dataset and profile.

    python scripts/compare_runs.py --models mdmd fr --datasets synth_casme_sq synth_cde --profile default \
        --old runs/loso --new runs/compare

Earlier runs are the folders ``<old>/<model>/<dataset>/<profile>-*`` written by another code version (their
``config.json`` has no ``code`` entry, or another one). A model and dataset of different tasks are skipped.
Exit status 1 when a run matches none of the earlier ones.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def earlier_runs(old: Path, model: str, dataset: str, profile: str, code: str) -> list[Path]:
    """Finished runs of another code version, oldest first."""
    runs = []
    for folder in (old / model / dataset).glob(f"{profile}-*"):
        description = folder / "config.json"
        if (folder / "predictions.csv").exists() and description.exists():
            if json.loads(description.read_text()).get("code") != code:
                runs.append(folder)
    return sorted(runs, key=lambda folder: folder.stat().st_mtime)


def main() -> int:
    from mecore.data import dataset_kind, load_dataset
    from mecore.loso import run_loso
    from mecore.models import get_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--old", type=Path, required=True, help="results folder of the earlier runs")
    parser.add_argument("--new", type=Path, required=True, help="results folder for the runs of this code")
    args = parser.parse_args()
    unmatched = 0
    for name in args.datasets:
        data = None
        for model in args.models:
            spec = get_model(model)
            if spec.task != dataset_kind(name):
                continue
            data = data or load_dataset(name, profile=args.profile if args.profile != "paper" else "large")
            started = time.perf_counter()
            result = run_loso(spec, data, args.profile, results_dir=args.new, progress=False)
            ours = (result.folder / "predictions.csv").read_bytes()
            olds = earlier_runs(args.old, model, name, args.profile, spec.code_version)
            same = [folder.name for folder in olds if (folder / "predictions.csv").read_bytes() == ours]
            unmatched += not same
            print(f"{model} on {name}: {len(result.predictions)} rows, {time.perf_counter() - started:.0f} s; "
                  f"{len(olds)} earlier run(s); identical to: {', '.join(same) or 'NONE'}", flush=True)
    return 1 if unmatched else 0


if __name__ == "__main__":
    sys.exit(main())
