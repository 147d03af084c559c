"""The embedded synthetic datasets: real layouts, detectable faces, local motion, determinism."""
from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from mecore.data import load_dataset
from mecore.data.synthetic import PROFILES, Camera, VideoPlan, ensure_synthetic, make_event, render_video
from mecore.data.synthetic_face import FaceRenderer, Identity
from mecore.preprocess import detect_face

SETS = ["synth_casme_sq", "synth_samm_lv", "synth_casme2", "synth_samm", "synth_smic_hs", "synth_smic_vis",
        "synth_smic_nir", "synth_smic_e", "synth_cde"]
CASCADE = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def faces(frame: np.ndarray) -> int:
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return len(CASCADE.detectMultiScale(grey, 1.1, 5, minSize=(40, 40)))


@pytest.mark.parametrize("name", SETS)
def test_synthetic_sets_load_through_the_real_loaders(smoke_root, name):
    data = load_dataset(name, profile="smoke")
    assert len(data.annotations) > 0 and data.annotations["onset"].le(data.annotations["offset"]).all()
    for video in data.videos.values():
        assert video.n_frames > 0
    if name in ("synth_casme_sq", "synth_samm_lv"):
        assert set(data.annotations["type"]) == {"micro", "macro"}
        assert data.repairs, "the synthetic workbooks carry the real quirks"


@pytest.mark.parametrize("name", SETS[:-1])
def test_face_detector_finds_one_face_per_frame(smoke_root, name):
    data = load_dataset(name, profile="smoke")
    checked = 0
    for video in data.videos.values():
        apexes = data.annotations.loc[data.annotations["video"] == video.name, "apex"].dropna().astype(int)
        numbers = set(video.frame_numbers[:: max(1, video.n_frames // 4)]) | set(apexes)
        for number in sorted(numbers):
            assert faces(video.frame(number)) == 1, f"{name} {video.name} frame {number}"
            checked += 1
    assert checked >= 8
    for video in data.videos.values():  # what the preprocessing's first-frame crop box needs
        assert detect_face(video.frame(video.first_frame)) is not None, f"{name} {video.name}"


def test_durations_hold(smoke_root):
    data = load_dataset("synth_casme_sq", profile="smoke")
    table = data.annotations
    seconds = (table["offset"] - table["onset"] + 1) / table["fps"]
    assert (seconds[table["type"] == "micro"] <= 0.5 + 1 / 30).all()
    repaired = table["offset"] == table["apex"]  # offset-0 rows repaired to [onset, apex]
    assert (seconds[(table["type"] == "macro") & ~repaired] >= 0.5).all()


@pytest.mark.parametrize("kind, low, high", [("micro", 0.5, 2.0), ("macro", 2.0, 6.0)])
def test_expressions_are_local_motion_that_flow_recovers(kind, low, high):
    rng = np.random.default_rng(1)
    event = make_event(rng, kind, onset=5, n=15, emotion="positive", family="happiness")
    event.aus = ["12"]
    plan = VideoPlan(n_frames=25, events=[event], seed=0, distractors=False)
    renderer = FaceRenderer(Identity.sample(5), 160)
    frames = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in render_video(renderer, plan, Camera(fps=30.0, noise_sigma=0.0))]
    flow = cv2.optflow.DualTVL1OpticalFlow_create().calc(frames[event.onset], frames[event.apex], None)
    magnitude = np.linalg.norm(flow, axis=-1)
    region = np.linalg.norm(renderer.au_field("12"), axis=-1) > 0.5
    assert low < np.percentile(magnitude[region], 95) < high  # the lip corners move about peak_px
    assert np.percentile(magnitude[~region], 50) < 0.1  # the rest of the face does not
    assert np.abs(frames[event.offset].astype(int) - frames[0]).max() <= 2  # back to neutral at offset


def test_au_fields_move_their_regions_only():
    renderer = FaceRenderer(Identity.sample(3), 160)
    smile, brows = renderer.au_field("12"), renderer.au_field("1")
    y_smile = np.unravel_index(np.linalg.norm(smile, axis=-1).argmax(), smile.shape[:2])[0]
    y_brows = np.unravel_index(np.linalg.norm(brows, axis=-1).argmax(), brows.shape[:2])[0]
    assert y_brows < 80 < y_smile  # brows in the upper half, lip corners in the lower
    left_only = renderer.au_field("L12")
    assert np.abs(left_only[:, :70]).max() < 0.05 < np.abs(left_only[:, 90:]).max()
    with pytest.raises(ValueError, match="no motion model"):
        renderer.au_field("99")


def test_generation_is_deterministic(tmp_path, smoke_root):
    tiny = {"subjects": 1, "clips": 2}
    PROFILES["smoke_test"] = {**PROFILES["smoke"], "casme2": tiny}
    try:
        from mecore.data.synthetic import write_casme2
        from tqdm.auto import tqdm

        for out in ("a", "b"):
            (tmp_path / out).mkdir()
            write_casme2(tmp_path / out, tiny, seed=7, progress=tqdm(disable=True))
    finally:
        del PROFILES["smoke_test"]
    a = pd.read_excel(tmp_path / "a" / "CASME2-coding-20190701.xlsx")
    b = pd.read_excel(tmp_path / "b" / "CASME2-coding-20190701.xlsx")
    pd.testing.assert_frame_equal(a, b)
    files_a = sorted((tmp_path / "a").rglob("*.jpg"))
    assert files_a and all(p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes() for p in files_a)


def test_ensure_synthetic_is_idempotent_and_atomic(smoke_root):
    stamp = (smoke_root / "casme2" / "mecore_synthetic.json").stat().st_mtime
    assert ensure_synthetic("smoke") == smoke_root
    assert (smoke_root / "casme2" / "mecore_synthetic.json").stat().st_mtime == stamp
    assert not list(smoke_root.glob(".*.partial*"))


TINY = {"subjects": 2, "clips": 2}


def dead_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_set_of_another_seed_is_read_as_it_is(tmp_path, monkeypatch):
    """``data generate --seed 7`` then ``load_dataset``: the seed-7 set is read, not silently rewritten with
    seed 0; the seed is in its stamp, which LOSO run keys carry."""
    import warnings

    from mecore.loso import synthetic_stamp

    monkeypatch.setenv("MECORE_HOME", str(tmp_path))
    monkeypatch.setitem(PROFILES["smoke"], "casme2", TINY)
    root = ensure_synthetic("smoke", seed=7, datasets=("casme2",))
    stamp_file = root / "casme2" / "mecore_synthetic.json"
    written = stamp_file.stat().st_mtime_ns
    frames = {p.name: p.stat().st_mtime_ns for p in (root / "casme2").rglob("*.jpg")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: nothing is regenerated
        data = load_dataset("synth_casme2", profile="smoke")
    assert stamp_file.stat().st_mtime_ns == written
    assert {p.name: p.stat().st_mtime_ns for p in (root / "casme2").rglob("*.jpg")} == frames
    assert synthetic_stamp(data)["seed"] == 7
    with pytest.warns(UserWarning, match=r"casme2: regenerating synthetic casme2 with seed 0: seed 0 was asked "
                                         r"for; it holds seed 7"):
        ensure_synthetic("smoke", seed=0, datasets=("casme2",))  # asked for: rewritten, and said so
    assert synthetic_stamp(load_dataset("synth_casme2", profile="smoke"))["seed"] == 0


def test_a_set_is_regenerated_only_for_a_missing_stamp_or_a_new_generator_and_says_so(tmp_path, monkeypatch):
    from mecore.data import synthetic

    monkeypatch.setitem(PROFILES["smoke"], "casme2", TINY)
    root = ensure_synthetic("smoke", root=tmp_path, seed=7, datasets=("casme2",))
    monkeypatch.setattr(synthetic, "_GENERATOR_VERSION", synthetic._GENERATOR_VERSION + 1)
    with pytest.warns(UserWarning, match=r"regenerating synthetic casme2 with seed 7: the generator changed"):
        ensure_synthetic("smoke", root=tmp_path, datasets=("casme2",))
    assert json.loads((root / "casme2" / "mecore_synthetic.json").read_text())["seed"] == 7  # its seed is kept
    (root / "casme2" / "mecore_synthetic.json").unlink()
    with pytest.warns(UserWarning, match="it has no readable mecore_synthetic.json"):
        ensure_synthetic("smoke", root=tmp_path, datasets=("casme2",))


def test_a_staging_folder_of_a_killed_generator_is_removed(tmp_path, monkeypatch):
    monkeypatch.setitem(PROFILES["smoke"], "casme2", TINY)
    ensure_synthetic("smoke", root=tmp_path, datasets=("casme2",))
    stale, alive = tmp_path / f".casme2.partial-{dead_pid()}", tmp_path / f".samm.partial-{os.getpid()}"
    fresh = tmp_path / f".smic.partial-{dead_pid()}"  # just written: may be another machine's, still growing
    for folder in (stale, alive, fresh):
        (folder / "sub01").mkdir(parents=True)
    old = time.time() - 3600
    for folder in (stale, alive):
        os.utime(folder, (old, old))
    ensure_synthetic("smoke", root=tmp_path, datasets=("casme2",))
    assert not stale.exists() and alive.exists() and fresh.exists()
