"""Benchmark ``mecore.spot`` on long videos (a script, not a timed test).

For each spotting model whose ``default``-profile LOSO run on ``synth_casme_sq`` exists (others are reported
as skipped), spot a 1-minute and a 10-minute 30 fps video, each in a fresh process, twice: cold (the video's
crops, flows or curves computed) and warm (read back from the cache). Reports the time of the ``spot`` call,
frames per second, the multiple of real time at 30 fps and the peak resident memory of the process
(``ru_maxrss`` of itself and of any children), with the load average of the machine.

The videos loop the frames of subject s15's default synthetic CAS(ME)^2-like videos (symbolic links, so
s15's fold is the one used: the model never saw the face). Their preprocessing cache goes to a scratch
cache whose other entries link to the real cache (the training videos' crops and flows, which their LOSO
runs computed, are read from there); a 10-minute run is skipped when ten times its 1-minute cold time exceeds
``--max-seconds``.

Usage: ``.venv/bin/python scripts/bench_spot.py [--minutes 1 10] [--models mdmd ...] [--work /tmp/bench_spot]``.
Results are printed as a table and written to ``<work>/bench_spot.csv``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from mecore import paths
from mecore.data import load_dataset
from mecore.models import available_models, get_model
from mecore.spot import SpotError, finished_subject, named_run

FPS = 30.0
DATASET, PROFILE, SUBJECT = "synth_casme_sq", "default", "s15"
CHILD = """
import json, resource, sys, time
from mecore.spot import spot
started = time.perf_counter()
intervals = spot(sys.argv[1], sys.argv[2], dataset=sys.argv[3], profile=sys.argv[4], subject=sys.argv[5],
                 fps=float(sys.argv[6]), out_dir=sys.argv[7], progress=False)
seconds = time.perf_counter() - started
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"seconds": seconds, "intervals": len(intervals), "peak_kib": peak}))
"""


def looped_video(folder: Path, minutes: float) -> int:
    """A frame folder of ``minutes`` at 30 fps: links to s15's frames, its videos one after another, looped."""
    dataset = load_dataset(DATASET, profile=PROFILE)
    sources = [path for video in sorted(dataset.videos.values(), key=lambda v: v.name) if video.subject == SUBJECT
               for path in video.frame_files.values()]
    n_frames = int(round(minutes * 60 * FPS))
    if folder.is_dir() and len(list(folder.iterdir())) == n_frames:
        return n_frames
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for number in range(n_frames):
        source = sources[number % len(sources)]
        (folder / f"img{number + 1:06d}{source.suffix}").symlink_to(source.resolve())
    return n_frames


def scratch_cache(root: Path) -> Path:
    """A cache folder whose entries (except ``spot``) link to the real cache: spot's new entries land here."""
    real = paths.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        link = root / entry.name
        if entry.name != "spot" and not link.exists():
            link.symlink_to(entry.resolve())
    return root


def run_once(model: str, video: Path, out_dir: Path, cache: Path) -> dict:
    """One spot call in a fresh process; its time, interval count, peak memory and the load average."""
    environment = {**os.environ, "MECORE_CACHE": str(cache)}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, str(video), model, DATASET, PROFILE, SUBJECT, str(FPS),
                             str(out_dir)], capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"spot {model} on {video} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {**measured, "process_s": wall, "load_1min": round((load_before + os.getloadavg()[0]) / 2, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--models", nargs="+", help="default: every spotting model")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_spot"), help="videos, cache and outputs")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="skip a longer video when its estimated cold time exceeds this")
    args = parser.parse_args()

    models = args.models or [name for name in available_models() if get_model(name).task == "spotting"]
    cache = scratch_cache(args.work / "cache")
    rows = []
    for model in models:
        run = named_run(get_model(model), DATASET, None, PROFILE)
        try:
            finished_subject(run, SUBJECT)
        except SpotError as error:
            print(f"{model}: skipped ({error})", flush=True)
            rows.append({"model": model, "skipped": "no trained default-profile run"})
            continue
        shortest_cold = None
        for minutes in sorted(args.minutes):
            n_frames = int(round(minutes * 60 * FPS))
            if shortest_cold is not None and shortest_cold * minutes / min(args.minutes) > args.max_seconds:
                estimate = shortest_cold * minutes / min(args.minutes)
                print(f"{model} {minutes:g} min: skipped (estimated {estimate:.0f} s cold)", flush=True)
                rows.append({"model": model, "minutes": minutes, "frames": n_frames,
                             "skipped": f"estimated {estimate:.0f} s cold > --max-seconds"})
                continue
            # a folder per model and length: every cold run computes its own crops and flows
            video = args.work / "videos" / f"{model}_{minutes:g}min"
            looped_video(video, minutes)
            for state in ("cold", "warm"):
                measured = run_once(model, video, args.work / "out", cache)
                row = {"model": model, "minutes": minutes, "frames": n_frames, "cache": state, **measured,
                       "frames_per_s": n_frames / measured["seconds"],
                       "x_real_time": n_frames / FPS / measured["seconds"],
                       "peak_mib": measured["peak_kib"] / 1024}
                rows.append(row)
                print(f"{model} {minutes:g} min {state}: {measured['seconds']:.1f} s, {row['frames_per_s']:.0f} "
                      f"frames/s, {row['x_real_time']:.1f}x real time, peak {row['peak_mib']:.0f} MiB, "
                      f"load {measured['load_1min']}", flush=True)
                if state == "cold" and minutes == min(args.minutes):
                    shortest_cold = measured["seconds"]
    table = pd.DataFrame(rows)
    out = args.work / "bench_spot.csv"
    table.to_csv(out, index=False)
    columns = [c for c in ("model", "minutes", "cache", "seconds", "frames_per_s", "x_real_time", "peak_mib",
                           "intervals", "load_1min", "skipped") if c in table]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"{os.cpu_count()} cores; written to {out}")


if __name__ == "__main__":
    main()
