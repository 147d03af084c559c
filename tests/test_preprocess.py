"""Preprocessing: LCN statistics, flow of known motions, strain of known deformations, faces, cache behaviour."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter
from skimage import data

from mecore.data.dataset import Dataset, DatasetError, Video, annotation_frame
from mecore.preprocess import pipeline
from mecore.preprocess import (FLOW_METHODS, CropSpec, crop_faces, detect_face, eye_angle, face_boxes, iter_flows,
                               lcn, onset_apex_flow, onset_apex_flows, optical_flow, optical_strain, pair_flow,
                               preprocess_dataset, preprocess_video)
from mecore.preprocess.cache import EntryWriter, open_entry
from mecore.preprocess.flow import FLOW_SETTINGS

SHIFT = (1.5, -0.75)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def face(astronaut) -> np.ndarray:
    """The astronaut's face, 128x128 grey."""
    return crop_faces(astronaut[None], CropSpec(size=128))[0]


def translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def write_video(folder, frames, name="v1", dataset="test") -> Video:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img{i + 1:03d}.png"), frame)
    return Video(dataset=dataset, subject="s1", name=name, folder=folder, fps=30.0)


@pytest.fixture()
def video(tmp_path, astronaut) -> Video:
    """Eight frames of the astronaut drifting right by 0.5 px per frame."""
    return write_video(tmp_path / "frames", [translate(astronaut, 0.5 * t, 0) for t in range(8)])


# --- LCN (Yap et al. Eq. 1) ---------------------------------------------------------------------------------

def test_lcn_statistics_and_equation(face):
    out = lcn(face)
    assert out.dtype == np.float32 and out.shape == face.shape
    assert abs(out.mean()) < 0.05 and 0.4 < out.std() < 1.2
    f = face.astype(np.float64)
    mean = gaussian_filter(f, 2.0, truncate=2.0)
    std = np.sqrt(gaussian_filter((f - mean) ** 2, 2.0, truncate=2.0))
    expected = (f - mean) / np.maximum(std, std.mean())
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(out[inner] - expected[inner]).max() < 0.02


def test_lcn_removes_brightness_and_contrast(face):
    changed = np.clip(face * 0.4 + 90, 0, 255)
    assert np.abs(lcn(changed) - lcn(face)).max() < 1e-3
    assert np.abs(lcn(changed.astype(np.uint8)) - lcn(face)).mean() < 0.1


def test_lcn_does_not_blow_up_flat_regions():
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 100.0)
    image[:, 32:] += rng.normal(0, 20, (64, 32))
    image[:, :28] += rng.normal(0, 0.1, (64, 28))
    out = lcn(image)
    assert np.abs(out[:, :24]).max() < 0.1 < np.abs(out[:, 36:]).mean()
    assert not lcn(np.full((16, 16), 7, np.uint8)).any()


# --- optical flow and strain ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(FLOW_METHODS))
def test_flow_recovers_a_known_translation(face, method):
    flow = optical_flow(face, translate(face, *SHIFT), method)
    assert flow.shape == (128, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16]
    end_point_error = np.hypot(inner[..., 0] - SHIFT[0], inner[..., 1] - SHIFT[1]).mean()
    assert end_point_error < 0.15, end_point_error


def test_flow_rejects_bad_input(face):
    with pytest.raises(ValueError, match="unknown flow method"):
        optical_flow(face, face, "lucas")
    with pytest.raises(ValueError, match="one size"):
        optical_flow(face, face[:64], "dis")


def test_strain_of_known_deformations():
    y, x = np.mgrid[0:32, 0:40].astype(np.float32)
    stretch = np.dstack([0.02 * x, -0.01 * y])
    assert np.allclose(optical_strain(stretch), np.hypot(0.02, 0.01), atol=1e-6)
    shear = np.dstack([0.04 * y, np.zeros_like(x)])
    assert np.allclose(optical_strain(shear), 0.04 / np.sqrt(2), atol=1e-6)
    translation = np.dstack([np.full_like(x, 3.0), np.full_like(x, -1.0)])
    assert not optical_strain(translation).any()


def test_streamed_k_frame_flows_match_direct_pairs(face):
    frames = np.stack([translate(face, 0.3 * t, 0.2 * t) for t in range(7)])
    chunks = ((np.arange(i, min(i + 3, 7)), frames[i:i + 3]) for i in range(0, 7, 3))
    numbers, flows = zip(*iter_flows(chunks, k=2, method="dis"))
    assert np.array_equal(np.concatenate(numbers), np.arange(5))
    flows = np.concatenate(flows)
    assert flows.shape == (5, 128, 128, 3)
    for t in range(5):
        assert np.array_equal(flows[t, ..., :2], optical_flow(frames[t], frames[t + 2], "dis"))
    assert np.allclose(flows[:, 16:-16, 16:-16, :2].mean(axis=(0, 1, 2)), [0.6, 0.4], atol=0.1)


# --- faces --------------------------------------------------------------------------------------------------

def test_face_detected_and_cropped(astronaut):
    x, y, w, h = detect_face(astronaut)
    assert 150 < x < 200 and 40 < y < 90 and 80 < w < 130
    larger = cv2.resize(astronaut, None, fx=1.2, fy=1.2)  # here the cascade also fires, larger, on her suit
    assert np.allclose(detect_face(larger) / 1.2, (x, y, w, h), atol=6)
    crops = crop_faces(astronaut[None], CropSpec(size=112, gray=False))
    assert crops.shape == (1, 112, 112, 3) and crops.dtype == np.uint8


def test_eye_alignment_undoes_a_rotation(astronaut):
    base = eye_angle(astronaut, detect_face(astronaut))
    box = detect_face(astronaut)
    centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    tilted = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D(centre, 12, 1.0), astronaut.shape[1::-1])
    _, angles = face_boxes(tilted[None], CropSpec(align=True))
    assert abs(angles[0] - (base - 12)) < 4
    aligned = crop_faces(tilted[None], CropSpec(size=256, align=True, margin=0.3))[0]
    assert abs(eye_angle(aligned, detect_face(aligned))) < 4


def test_no_face_names_video_and_frame(tmp_path):
    blank = write_video(tmp_path / "blank", [np.full((120, 160, 3), 128, np.uint8)] * 3, name="empty")
    with pytest.raises(DatasetError, match=r"frame 1 of video 'empty'"):
        preprocess_video(blank, cache_root=tmp_path / "cache")
    for box in ("smoothed", "median"):
        with pytest.raises(DatasetError, match=r"frames 1\.\.3 of video 'empty'"):
            crop_faces(blank, CropSpec(box=box))


def test_smoothed_boxes_follow_the_face(astronaut):
    frames = np.stack([translate(astronaut, 4 * t, 0) for t in range(7)])
    boxes, _ = face_boxes(frames, CropSpec(box="smoothed", smooth_sigma=0, detect_every=2))
    assert np.all(np.diff(boxes[:, 0]) > 0) and 18 < boxes[-1, 0] - boxes[0, 0] < 30
    raw, _ = face_boxes(frames, CropSpec(box="smoothed", smooth_sigma=0))
    smoothed, _ = face_boxes(frames, CropSpec(box="smoothed", smooth_sigma=2))
    assert np.abs(np.diff(smoothed[:, 0], 2)).sum() < np.abs(np.diff(raw[:, 0], 2)).sum()


def test_median_box_is_fixed_and_ignores_missed_frames(astronaut):
    blank = np.full_like(astronaut, 128)
    frames = np.stack([blank, translate(astronaut, 2, 0), astronaut, translate(astronaut, 30, 0), astronaut])
    boxes, _ = face_boxes(frames, CropSpec(box="median"))
    raw, _ = face_boxes(frames[1:], CropSpec(box="smoothed", smooth_sigma=0))
    assert len(boxes) == 5 and np.all(boxes == boxes[0])
    assert np.allclose(boxes[0], np.median(raw, axis=0))


def test_registration_undoes_head_motion_in_a_fixed_box(astronaut):
    moves = [(0, 0, 0), (1.5, -1, 0.5), (3, -0.5, 1.0), (2, 1.5, -1.0), (4, 2, 1.5)]  # dx, dy px; degrees
    centre = (astronaut.shape[1] / 2, astronaut.shape[0] / 2)
    frames = []
    for dx, dy, angle in moves:
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        matrix[:, 2] += (dx, dy)
        frames.append(cv2.warpAffine(astronaut, matrix, astronaut.shape[1::-1], flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REFLECT))
    frames = np.stack(frames)
    fixed = crop_faces(frames, CropSpec(size=96, box="first")).astype(float)
    registered = crop_faces(frames, CropSpec(size=96, box="first", register=True)).astype(float)
    assert np.array_equal(registered[0], fixed[0])
    inner = (slice(None), slice(12, -12), slice(12, -12))  # away from the border the warp fills in
    before = np.abs(fixed[1:] - fixed[:1])[inner].mean(axis=(1, 2))
    after = np.abs(registered[1:] - registered[:1])[inner].mean(axis=(1, 2))
    assert (before > 5).all() and (after < 2.5).all(), (before, after)  # what is left: interpolation blur


def test_registration_enters_the_cache_key_only_when_on():
    assert "register" not in CropSpec(size=64).cache_key()  # entries written before the option stay valid
    assert CropSpec(size=64, register=True).cache_key()["register"] is True


# --- pipeline and cache -------------------------------------------------------------------------------------

def test_pipeline_outputs_and_cache_hit(video, tmp_path, caplog):
    cache = tmp_path / "cache"
    out = preprocess_video(video, CropSpec(size=64), lcn_faces=True, flow_steps=(1, 3), chunk=3, cache_root=cache)
    assert out["crops"].shape == (8, 64, 64) and out["lcn"].shape == (8, 64, 64)
    assert out["flow1"].shape == (7, 64, 64, 3) and out["flow3"].shape == (5, 64, 64, 3)
    assert isinstance(out["flow1"], np.memmap)
    scale = 64 / detect_face(video.frame(1))[2] / 1.2  # frame pixels -> crop pixels
    assert abs(np.median(out["flow1"][..., 0]) - 0.5 * scale) < 0.05
    assert abs(np.median(out["flow3"][..., 0]) - 1.5 * scale) < 0.1
    memory = preprocess_video(video, CropSpec(size=64), lcn_faces=True, flow_steps=(1, 3), cache=False)
    for name in out:
        assert np.array_equal(out[name], memory[name])
    inode = os.stat(out["flow1"].filename).st_ino
    with caplog.at_level(logging.INFO, logger="mecore.preprocess.cache"):
        again = preprocess_video(video, CropSpec(size=64), lcn_faces=True, flow_steps=(1, 3), cache_root=cache)
    assert not caplog.records and os.stat(again["flow1"].filename).st_ino == inode


def test_changed_parameter_gives_a_new_entry(video, tmp_path):
    cache = tmp_path / "cache"
    first = preprocess_video(video, CropSpec(size=64), lcn_faces=True, cache_root=cache)
    other = preprocess_video(video, CropSpec(size=64), lcn_faces=True, lcn_sigma=4.0, cache_root=cache)
    assert other["lcn"].filename != first["lcn"].filename and other["crops"].filename == first["crops"].filename
    assert not np.allclose(other["lcn"], first["lcn"])
    wider = preprocess_video(video, CropSpec(size=64, margin=0.3), cache_root=cache)
    assert not np.array_equal(wider["crops"], first["crops"])


def test_changed_flow_settings_give_a_new_entry(video, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    fast = preprocess_video(video, CropSpec(size=64), flow_steps=(1,), cache_root=cache)["flow1"]
    monkeypatch.setitem(FLOW_SETTINGS, "dis", {"preset": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM})
    medium = preprocess_video(video, CropSpec(size=64), flow_steps=(1,), cache_root=cache)["flow1"]
    assert medium.filename != fast.filename and not np.array_equal(medium, fast)


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_corrupted_entry_is_rebuilt(video, tmp_path, caplog, damage):
    cache = tmp_path / "cache"
    good = np.array(preprocess_video(video, CropSpec(size=64), flow_steps=(1,), cache_root=cache)["flow1"])
    path = next(cache.rglob("flow1-*.npy"))
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw[:16] = b"\0" * 16
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.INFO, logger="mecore.preprocess.cache"):
        rebuilt = preprocess_video(video, CropSpec(size=64), flow_steps=(1,), cache_root=cache)["flow1"]
    assert any("rebuilding" in r.message and "flow1" in r.message for r in caplog.records)
    assert np.array_equal(rebuilt, good)


def test_changed_frames_make_the_entry_stale(video, tmp_path, caplog):
    cache = tmp_path / "cache"
    before = np.array(preprocess_video(video, CropSpec(size=64), cache_root=cache)["crops"])
    frame = video.frame_path(4)
    cv2.imwrite(str(frame), 255 - cv2.imread(str(frame)))
    with caplog.at_level(logging.INFO, logger="mecore.preprocess.cache"):
        after = preprocess_video(video, CropSpec(size=64), cache_root=cache)["crops"]
    assert any("stale" in r.message for r in caplog.records)
    assert not np.array_equal(after[3], before[3]) and np.array_equal(after[0], before[0])


def test_failed_write_keeps_the_old_entry(tmp_path):
    path = tmp_path / "x" / "arr-1.npy"
    params, source = {"a": 1}, "src"
    with EntryWriter(path, (2, 3), np.float32, "arr", params, source) as writer:
        writer.write(np.ones((2, 3)))
    with pytest.raises(ValueError, match="1 rows written"):
        with EntryWriter(path, (2, 3), np.float32, "arr", params, source) as writer:
            writer.write(np.zeros((1, 3)))
    assert np.array_equal(open_entry(path, "arr", params, source), np.ones((2, 3)))
    assert sorted(p.name for p in path.parent.iterdir()) == ["arr-1.json", "arr-1.npy"]


def test_onset_apex_flow_and_parallel_dataset(tmp_path, astronaut, monkeypatch):
    frames = [translate(astronaut, 0.0, 0.0), translate(astronaut, 2.0, 0.0), translate(astronaut, 2.0, 1.0)]
    videos = {name: write_video(tmp_path / name, frames, name=name) for name in ("a", "b")}
    rows = annotation_frame([{"dataset": "test", "subject": "s1", "video": name, "onset": 1, "apex": 3, "offset": 3,
                              "type": "micro", "emotion": "others", "action_units": "", "fps": 30.0}
                             for name in videos])
    dataset = Dataset("test", tmp_path, rows, videos)
    cache = tmp_path / "cache"
    flow = onset_apex_flow(videos["a"], 1, 3, method="tvl1_reduced", cache_root=cache)
    assert flow.shape == (28, 28, 3)
    scale = 128 / (detect_face(astronaut)[2] * 1.2)
    assert np.allclose(np.median(flow[..., :2], axis=(0, 1)), [2 * scale, 1 * scale], atol=0.15)
    assert np.array_equal(onset_apex_flow(videos["a"], 1, 3, method="tvl1_reduced", cache_root=cache), flow)
    assert np.array_equal(pair_flow(frames[0], frames[2], method="tvl1_reduced"), flow)
    serial = preprocess_dataset(dataset, CropSpec(size=48), workers=1, progress=False, flow_steps=(1,),
                                cache_root=tmp_path / "serial")
    parallel = preprocess_dataset(dataset, CropSpec(size=48), workers=2, progress=False, flow_steps=(1,),
                                  cache_root=tmp_path / "parallel")
    for name in videos:
        assert np.array_equal(serial[name]["flow1"], parallel[name]["flow1"])
    bad = rows.assign(apex=pd.array([pd.NA, 3], dtype="Int64"))
    with pytest.raises(DatasetError, match="no apex"):
        onset_apex_flows(dataset, bad, workers=1)
    # in parallel, the cached flows are read in this process; only the missing ones go to the workers
    assert onset_apex_flow(videos["b"], 1, 3, method="tvl1_reduced", cache_root=cache, compute=False) is None
    sent = []
    original = pipeline.run_parallel
    monkeypatch.setattr(pipeline, "run_parallel", lambda function, jobs, *args: sent.append(len(jobs)) or
                        original(function, jobs, *args))
    both = onset_apex_flows(dataset, rows, workers=2, progress=False, method="tvl1_reduced", cache_root=cache)
    assert sent == [1] and np.array_equal(both[0], flow)
    again = onset_apex_flows(dataset, rows, workers=2, progress=False, method="tvl1_reduced", cache_root=cache)
    assert sent == [1, 0] and np.array_equal(again, both)


def test_a_video_read_at_every_kth_frame_has_its_own_entries(video, tmp_path):
    cache = tmp_path / "cache"
    full = preprocess_video(video, CropSpec(size=64), flow_steps=(1,), cache_root=cache)
    every = video.every(2)
    assert list(every.frame_numbers) == list(video.frame_numbers[::2]) and every.fps == video.fps / 2
    sparse = preprocess_video(every, CropSpec(size=64), flow_steps=(1,), cache_root=cache)
    assert sparse["crops"].filename != full["crops"].filename and len(sparse["crops"]) == 4
    # both entries stay valid side by side: a second read of each computes nothing
    assert preprocess_video(video, CropSpec(size=64), flow_steps=(1,), cache_root=cache)["crops"].filename == \
        full["crops"].filename
    np.testing.assert_array_equal(sparse["crops"], full["crops"][::2])


def test_read_chunks_gives_the_entry_back_in_row_chunks(video, tmp_path):
    from mecore.preprocess import read_chunks
    out = preprocess_video(video, CropSpec(size=64), flow_steps=(1,), cache_root=tmp_path / "cache")
    for name in ("crops", "flow1"):
        chunks = list(read_chunks(out[name], 3))
        assert [len(c) for c in chunks] == [3, 3, len(out[name]) - 6] and not isinstance(chunks[0], np.memmap)
        np.testing.assert_array_equal(np.concatenate(chunks), out[name])
    np.testing.assert_array_equal(np.concatenate(list(read_chunks(np.arange(7), 3))), np.arange(7))
