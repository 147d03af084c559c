"""Benchmark preprocessing on this machine (a script, not a timed test).

Reports
1. frames (pairs) per second of face crop, LCN and each optical-flow backend on 128x128 faces;
2. the cold and warm (cached) wall time to preprocess the synthetic CAS(ME)^2-like set of a profile
   (128x128 crops, their LCN, DIS flow t -> t+1 with strain; ``--workers`` videos at a time);
3. the peak resident memory of preprocessing one long video of ``--long-minutes`` (default 10) at 30 fps next
   to one of 1 minute, each in a fresh process: streaming keeps the two close.

Usage: ``.venv/bin/python scripts/bench_preprocess.py [--profile default] [--long-minutes 10] [--skip-long]``.
Results are printed and written to ``<runs>/bench_preprocess.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mecore import paths
from mecore.data import load_dataset
from mecore.data.dataset import Video
from mecore.data.synthetic import write_long_video
from mecore.preprocess import FLOW_METHODS, CropSpec, detect_face, lcn, optical_flow, preprocess_dataset
from mecore.preprocess.face import crop_face, square_box

FACE = 128
PAIRS = {"tvl1": 12, "tvl1_reduced": 60, "dis": 300, "farneback": 200}
PEAK_CHILD = """
import resource, sys
from pathlib import Path
from mecore.data.dataset import Video
from mecore.preprocess import CropSpec, preprocess_video
video = Video("bench", "long", Path(sys.argv[1]).name, Path(sys.argv[1]), 30.0)
out = preprocess_video(video, CropSpec(size=128), lcn_faces=True, flow_steps=(1,), cache_root=sys.argv[2])
print(video.n_frames, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def per_second(count: int, function) -> float:
    start = time.perf_counter()
    function()
    return count / (time.perf_counter() - start)


def throughput(frames: np.ndarray) -> dict[str, float]:
    """Frames per second of crop and LCN, pairs per second of each flow backend, on 128x128 faces."""
    box = square_box(detect_face(frames[0]), 0.1)
    faces = np.stack([crop_face(frame, box, FACE) for frame in frames])
    rates = {"crop": per_second(len(frames), lambda: [crop_face(frame, box, FACE) for frame in frames]),
             "lcn": per_second(len(faces), lambda: [lcn(face) for face in faces])}
    for method in FLOW_METHODS:
        n = min(PAIRS[method], len(faces) - 1)
        rates[f"flow_{method}"] = per_second(n, lambda: [optical_flow(faces[i], faces[i + 1], method)
                                                         for i in range(n)])
    reference = [optical_flow(faces[i], faces[i + 1], "tvl1") for i in range(4)]
    for method in FLOW_METHODS:
        errors = [np.hypot(*(optical_flow(faces[i], faces[i + 1], method) - reference[i]).transpose(2, 0, 1)).mean()
                  for i in range(4)]
        rates[f"epe_vs_tvl1_{method}"] = float(np.mean(errors))
    return rates


def cold_and_warm(profile: str, workers: int) -> dict[str, float]:
    dataset = load_dataset("synth_casme_sq", profile=profile)
    n_frames = sum(video.n_frames for video in dataset.videos.values())
    cache = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        timings = {}
        for run in ("cold", "warm"):
            start = time.perf_counter()
            preprocess_dataset(dataset, CropSpec(size=FACE), workers=workers, lcn_faces=True, flow_steps=(1,),
                               flow_method="dis", cache_root=cache)
            timings[f"{run}_s"] = time.perf_counter() - start
        size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"videos": len(dataset.videos), "frames": n_frames, **timings, "cache_mb": size / 2 ** 20}


def peak_memory(minutes: float) -> dict[str, float]:
    """Peak RSS (MiB) of preprocessing a generated long video of ``minutes`` in a fresh process."""
    folder = paths.cache_dir() / "bench" / f"long_{minutes:g}min"
    expected = int(round(minutes * 60 * 30))
    if not folder.is_dir() or len(list(folder.glob("*.jpg"))) != expected:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating a {minutes:g}-minute video ({expected} frames) in {folder} ...", flush=True)
        write_long_video(folder, minutes * 60, fps=30.0)
    cache = Path(tempfile.mkdtemp(prefix="bench_long_"))
    try:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(folder), str(cache)], check=True,
                                capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    frames, max_rss_kib = map(int, result.stdout.split()[-2:])
    return {"frames": frames, "seconds": seconds, "peak_rss_mib": max_rss_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=paths.profile(), help="synthetic data profile (default: $MECORE_PROFILE)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--skip-long", action="store_true", help="skip the long-video peak-memory check")
    args = parser.parse_args()

    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "profile": args.profile}
    dataset = load_dataset("synth_casme_sq", profile=args.profile)
    video: Video = next(iter(dataset.videos.values()))
    frames = np.stack([image for _, image in video.iter_frames(video.first_frame, video.first_frame + 100)])
    report["throughput_per_s_128px"] = throughput(frames)
    report["casme_sq"] = cold_and_warm(args.profile, args.workers)
    if not args.skip_long:
        report["peak_memory"] = {"1min": peak_memory(1.0), f"{args.long_minutes:g}min": peak_memory(args.long_minutes)}

    print(json.dumps(report, indent=1))
    out = paths.runs_dir() / "bench_preprocess.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
