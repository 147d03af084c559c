"""Check every model's ``paper`` profile on a GPU: a bounded number of steps of one LOSO fold, with and without
mixed precision, on the smoke synthetic sets.

For each model it runs

1. ``mecore.plan.plan`` (one trial fold, ``--plan-steps`` steps): the device memory per micro-batch and the seconds
   per step that ``python -m mecore plan`` would print;
2. ``mecore.loso.run_loso(..., folds=1, max_steps=--steps)`` twice, with the configuration's ``mixed_precision`` off and on, from the
   same seed (so the same weights and the same first batch), recording every training's per-step losses, step
   times and peak device memory (``mecore.train.FIT_LOG``).

Verdicts per model: every step loss finite; the loss falling (the mean of the last third of the steps below the
mean of the first third, in the fp32 run's last training); AMP's first-step loss within ``--amp-rtol`` of
fp32's (same weights, same batch: the difference is autocast's rounding alone); the measured peak device memory
next to plan's. The optical flows of MESNet and BiFPN-I3D are computed with DIS instead of TV-L1 here (``--flow``):
TV-L1 at their paper sizes is CPU preprocessing, cached once per video, and not what this check measures.

Offline machine: needs mecore's dependencies (opencv-contrib, dask, openpyxl, ...; carry wheels) and generates
the smoke synthetic sets on first use. Writes ``runs/gpu_check.json``; exits 1 when a verdict fails.

    python scripts/gpu_check.py                 # all models, CUDA
    python scripts/gpu_check.py --device cpu --models yap3dcnn --steps 4 --plan-steps 2   # a dry run here
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time

MODELS = {"mesnet_crn": "synth_casme_sq", "bifpn_i3d": "synth_casme_sq", "stsnet_sw": "synth_casme_sq",
          "yap3dcnn": "synth_casme_sq", "fr": "synth_casme2", "fr_basic_inception": "synth_casme2"}
TVL1_MODELS = ("mesnet_crn", "bifpn_i3d")
# The smoke sets are tiny (3 subjects, one or two videos each): MESNet's train/validation split needs the smoke
# profile's split settings there, as its smoke profile has.
SMOKE_SET = {"mesnet_crn": {"split.reference": "fold", "split.min_train": 0.25}}


def precision_key(model: str) -> str:
    """Where the model's configuration says whether it trains under autocast (``optim.`` or ``train.``)."""
    from mecore.models import get_model

    keys = [key for key in get_model(model).config("paper").flat() if key.endswith(".mixed_precision")]
    if len(keys) != 1:
        raise SystemExit(f"{model}: expected one mixed_precision entry in its configuration, found {keys}")
    return keys[0]


def falling(losses: list[float]) -> bool:
    third = max(1, len(losses) // 3)
    return len(losses) >= 3 and sum(losses[-third:]) / third < sum(losses[:third]) / third


def run_model(model: str, dataset, steps: int, plan_steps: int, device: str, flow: str, amp_rtol: float) -> dict:
    import torch

    from mecore import loso, train
    from mecore.plan import plan

    overrides = {**({"input.flow_method": flow} if model in TVL1_MODELS else {}), **SMOKE_SET.get(model, {})}
    row: dict = {"model": model, "dataset": dataset.name, "overrides": overrides}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if plan_steps:
        planned = plan(model, dataset, "paper", steps=plan_steps, trial_frames=400, trial_subjects=None,
                       device=device, config=overrides)
        last = planned["trainings per fold"][-1]
        row["plan"] = {"device GB per micro-batch": last["device GB per micro-batch"],
                       "seconds per step": last["seconds per step"], "micro-batch": last["micro-batch"],
                       "batch": last["batch"], "peak host RAM GiB": planned["peak host RAM GiB"]}
    for amp in (False, True):
        train.FIT_LOG.clear()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as results:
            loso.run_loso(model, dataset, "paper", config={**overrides, precision_key(model): amp}, folds=1,
                          max_steps=steps, scheduler="sync", results_dir=results, progress=False)
        fits = [{"losses": f["step_losses"], "seconds": f["step_seconds"], "amp": f["mixed_precision"],
                 "device GB": (f["peak_device_bytes"] or 0) / 1e9, "batch": f["batch_size"],
                 "micro-batch": f["micro_batch"]} for f in train.FIT_LOG]
        row["amp" if amp else "fp32"] = {"fits": fits, "wall seconds": time.perf_counter() - started}
    fp32, amp = row["fp32"]["fits"], row["amp"]["fits"]
    main32, main_amp = fp32[-1], amp[-1]
    times = main32["seconds"][1:] or main32["seconds"]
    first32, first_amp = main32["losses"][0], main_amp["losses"][0]
    row["verdict"] = {
        "finite": all(math.isfinite(x) for f in fp32 + amp for x in f["losses"]),
        "falling": falling(main32["losses"]),
        "amp used": all(f["amp"] for f in amp) if device == "cuda" else "n/a on cpu",
        "amp first-step rel diff": abs(first_amp - first32) / max(abs(first32), 1e-12),
        "amp close": abs(first_amp - first32) <= amp_rtol * max(abs(first32), 1e-12),
        "steps per second": 1 / (sum(times) / len(times)) if times else float("nan"),
        "device GB (fp32, amp)": (main32["device GB"], main_amp["device GB"]),
        "plan device GB": row.get("plan", {}).get("device GB per micro-batch"),
    }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=12, help="optimiser steps of each training (default 12)")
    parser.add_argument("--plan-steps", type=int, default=3, help="steps of plan's trial; 0 skips plan")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--flow", default="dis", help="flow method for MESNet and BiFPN-I3D (default dis)")
    parser.add_argument("--amp-rtol", type=float, default=0.05)
    args = parser.parse_args()

    import os

    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    from mecore import paths
    from mecore.data import load_dataset

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; use --device cpu for a dry run", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else ""), flush=True)
    rows, failed = [], []
    for model in args.models:
        started = time.perf_counter()
        try:
            row = run_model(model, load_dataset(MODELS[model], profile="smoke"), args.steps, args.plan_steps,
                            args.device, args.flow, args.amp_rtol)
        except Exception as error:  # one model's failure must not hide the others' results
            row = {"model": model, "error": f"{type(error).__name__}: {error}"}
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        verdict = row.get("verdict", {})
        ok = "error" not in row and verdict["finite"] and verdict["falling"] and verdict["amp close"] \
            and verdict["amp used"] in (True, "n/a on cpu")
        if not ok:
            failed.append(model)
        print(f"{model}: {'ok' if ok else 'FAILED'} in {row['seconds']:.0f} s "
              f"{json.dumps(verdict or row.get('error'), default=str)}", flush=True)
        for kind in ("fp32", "amp"):
            for fit in row.get(kind, {}).get("fits", []):
                print(f"  {kind} losses {[round(x, 4) for x in fit['losses']]}", flush=True)
    out = paths.runs_dir() / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=str))
    print(f"written {out}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
