"""Real-scale benchmark (a script, not a test): cache storage, peak memory of a trial fold, projected totals.

1. **Storage.** One video's cache entries (uint8 crops, a float16 flow) as the ``.npy`` files mecore writes,
   against a chunked, compressed array store (zarr, Blosc zstd with byte shuffle, 32 frames a chunk; needs
   ``pip install zarr``, skipped without it): bytes per frame, and read throughput of random 32-frame clips
   (the access pattern of the training datasets), each from a cold page cache where the OS allows
   (``/proc/sys/vm/drop_caches`` as root), else warm.
2. **Peak memory.** ``python -m mecore loso --model M --dataset casme_sq --root data/synthetic/SIZE/casme_sq
   --profile P --folds 1 --max-steps 3 --scheduler sync`` in a child process for each SIZE given, with its peak
   resident set (``/usr/bin/time -v``) and the cache bytes per frame it left.
3. **Projection.** Cache bytes per frame of every spotter's ``paper`` inputs (shapes from
   :func:`mecore.preprocess.pipeline.entry_plan`, entries shared between models counted once), times the real
   CAS(ME)^2 (about 435,000 frames at 30 fps, colour) and SAMM-LV (about 1,000,000 frames at 200 fps, grey).

Usage: ``.venv/bin/python scripts/bench_real_scale.py [--model yap3dcnn --profile paper --sizes smoke default
large] [--skip-storage] [--skip-rss]``. Prints tables and writes ``<runs>/bench_real_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mecore import paths
from mecore.data import load_dataset
from mecore.inputs import Rows
from mecore.models import get_model
from mecore.preprocess import CropSpec, preprocess_video
from mecore.preprocess.pipeline import entry_plan

REAL = {"casme_sq": {"frames": 435_000, "fps": 30, "colour": True},
        "samm_lv": {"frames": 1_000_000, "fps": 200, "colour": False}}
CLIP = 32


def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def clip_reads(read, n_rows: int, clips: int = 200, seed: int = 0) -> float:
    """Frames per second of ``clips`` random reads of CLIP consecutive rows."""
    starts = np.random.default_rng(seed).integers(0, max(n_rows - CLIP, 1), clips)
    started = time.perf_counter()
    for start in starts:
        read(int(start), int(start) + CLIP)
    return clips * CLIP / (time.perf_counter() - started)


def storage(video) -> list[dict]:
    entries = preprocess_video(video, CropSpec(size=128, box="median", detect_every=15), flow_steps=(4,),
                               flow_method="tvl1_reduced", flow_channels="xy", flow_size=32, progress=False)
    rows = []
    try:
        import zarr
        from zarr.codecs import BloscCodec
    except ImportError:
        zarr = None
    for name, array in entries.items():
        path = Path(array.filename)
        npy = Rows(path)
        cold = drop_page_cache()
        rows.append({"entry": name, "store": ".npy (mecore)", "dtype": str(array.dtype),
                     "bytes/frame": path.stat().st_size / len(array),
                     "frames/s (random 32-frame clips)": clip_reads(lambda a, b: npy[a:b], len(array)),
                     "cold": cold})
        if zarr is None:
            continue
        with tempfile.TemporaryDirectory(dir=paths.cache_dir()) as folder:
            store = zarr.create_array(store=f"{folder}/entry.zarr", shape=array.shape, dtype=array.dtype,
                                      chunks=(CLIP, *array.shape[1:]),
                                      compressors=BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"))
            store[:] = np.asarray(array)
            size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
            opened = zarr.open_array(f"{folder}/entry.zarr", mode="r")
            cold = drop_page_cache()
            rows.append({"entry": name, "store": "zarr + blosc zstd", "dtype": str(array.dtype),
                         "bytes/frame": size / len(array),
                         "frames/s (random 32-frame clips)": clip_reads(lambda a, b: opened[a:b], len(array)),
                         "cold": cold})
    return rows


def peak_rss(model: str, profile: str, size: str, dataset: str = "casme_sq") -> dict:
    root = paths.home() / "data" / "synthetic" / size / dataset
    with tempfile.TemporaryDirectory() as results:
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "mecore", "loso", "--model", model, "--dataset",
                   dataset, "--root", str(root), "--profile", profile, "--folds", "1", "--max-steps", "3",
                   "--scheduler", "sync", "--results", results]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) * 1024
    data = load_dataset(dataset, root=root)
    frames = sum(v.n_frames for v in data.videos.values())
    return {"model": model, "profile": profile, "set": size, "frames": frames,
            "peak RSS GiB": peak / 1024 ** 3, "seconds": time.perf_counter() - started}


def paper_inputs(dataset: str) -> dict[str, dict]:
    """Entry name -> (bytes per frame, frames read, models) of every spotter's paper-profile inputs on ``dataset``
    (a model with ``max_fps`` reads every ``round(fps / max_fps)``-th frame, as ``Dataset.at_most_fps`` does)."""
    colour, fps = REAL[dataset]["colour"], REAL[dataset]["fps"]
    entries: dict[str, dict] = {}

    def add(model, crop, max_fps, **flow):
        step = max(1, round(fps / max_fps)) if max_fps else 1
        crop = CropSpec(**{**crop, "gray": crop.get("gray", True) or not colour})
        for name, (kind, params, shape, dtype) in entry_plan(1000 + flow.get("flow_steps", (0,))[0], crop,
                                                             **flow).items():
            key = json.dumps([kind, params, step], sort_keys=True)
            per_frame = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
            entries.setdefault(key, {"entry": f"{kind} {shape[1:]} {np.dtype(dtype).name}", "bytes/frame": per_frame,
                                     "frames": REAL[dataset]["frames"] // step, "models": []})["models"].append(model)

    for model in ("mesnet_crn", "bifpn_i3d", "yap3dcnn", "stsnet_sw"):
        inputs = get_model(model).config("paper", dataset).input
        flow = ({"flow_steps": (inputs.flow_step,), "flow_method": inputs.flow_method, "flow_channels": "xy",
                 "flow_size": inputs.get("load_size", inputs.get("input_size"))} if "flow_step" in inputs else {})
        add(model, inputs.crop, inputs.max_fps, **flow)
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yap3dcnn")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--sizes", nargs="+", default=["smoke", "default"])
    parser.add_argument("--skip-storage", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    import pandas as pd

    out = {}
    if not args.skip_storage:
        video = next(iter(load_dataset("casme_sq", root=paths.home() / "data/synthetic/default/casme_sq").videos.values()))
        out["storage"] = storage(video)
        print(pd.DataFrame(out["storage"]).to_string(index=False), "\n")
    if not args.skip_rss:
        out["rss"] = [peak_rss(args.model, args.profile, size) for size in args.sizes]
        table = pd.DataFrame(out["rss"])
        table["ratio to first"] = table["peak RSS GiB"] / table["peak RSS GiB"].iloc[0]
        print(table.to_string(index=False), "\n")
    out["projection"] = {}
    for dataset, real in REAL.items():
        entries = list(paper_inputs(dataset).values())
        for entry in entries:
            entry["GB"] = entry["bytes/frame"] * entry["frames"] / 1e9
        out["projection"][dataset] = entries
        print(f"paper-profile inputs on the real {dataset} ({real['frames']:,} frames):")
        print(pd.DataFrame(entries).to_string(index=False))
        print(f"total {sum(e['GB'] for e in entries):.0f} GB\n")
    total = sum(e["GB"] for entries in out["projection"].values() for e in entries)
    print(f"all spotters' paper-profile inputs, both real sets: {total:.0f} GB")
    path = paths.runs_dir() / "bench_real_scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
