"""The streamed input layer: lazy cache rows, compact float16 entries, streaming statistics, trial videos."""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from mecore.data.dataset import Video
from mecore.inputs import Rows, crop_rows, flow_rows, streaming_std
from mecore.preprocess import CropSpec, preprocess_video
from mecore.preprocess.cache import entry_path
from mecore.preprocess.pipeline import area_mean, entry_plan


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Ten frames of the astronaut drifting right by 0.4 px and down by 0.2 px per frame."""
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    out = []
    for t in range(10):
        matrix = np.float32([[1, 0, 0.4 * t], [0, 1, 0.2 * t]])
        out.append(cv2.warpAffine(astronaut, matrix, astronaut.shape[1::-1], flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REFLECT))
    return out


@pytest.fixture()
def video(tmp_path, frames) -> Video:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img{i + 1:03d}.png"), frame)
    return Video(dataset="test", subject="s1", name="v1", folder=folder, fps=30.0)


def test_rows_read_what_indexing_the_array_reads(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (50, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    for rows in (Rows(tmp_path / "a.npy"), Rows(np.load(tmp_path / "a.npy", mmap_mode="r")), Rows(array)):
        assert rows.shape == array.shape and rows.dtype == np.uint8 and len(rows) == 50
        np.testing.assert_array_equal(rows[7], array[7])
        np.testing.assert_array_equal(rows[-1], array[-1])
        np.testing.assert_array_equal(rows[10:23], array[10:23])
        np.testing.assert_array_equal(rows[45:80], array[45:80])
        np.testing.assert_array_equal(rows[::7], array[::7])
        index = [31, 3, 4, 5, 5, 49, 0]
        np.testing.assert_array_equal(rows[index], array[index])
        np.testing.assert_array_equal(np.concatenate(list(rows.chunks(16))), array)
        np.testing.assert_array_equal(np.stack(list(rows)), array)
        with pytest.raises(IndexError):
            rows[50]
        with pytest.raises(IndexError):
            rows[[0, 50]]


def test_rows_pad_with_zero_rows_and_pickle_as_a_path(tmp_path):
    array = np.arange(6 * 2, dtype=np.float16).reshape(6, 2)
    np.save(tmp_path / "a.npy", array)
    rows = Rows(tmp_path / "a.npy", length=9)
    assert rows.shape == (9, 2)
    np.testing.assert_array_equal(rows[4:9], np.concatenate([array[4:], np.zeros((3, 2), np.float16)]))
    rows[0]  # opens the file
    copy = pickle.loads(pickle.dumps(rows))
    assert len(pickle.dumps(rows)) < 600 and copy._fd is None
    np.testing.assert_array_equal(copy[[8, 1]], np.stack([np.zeros(2, np.float16), array[1]]))
    with pytest.raises(ValueError, match="less than"):
        Rows(tmp_path / "a.npy", length=3)


def test_streaming_std_equals_torch_std_of_the_concatenation(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.normal(0.3, 2.0, (n, 3, 3)).astype(np.float16) for n in (5, 17, 1)]
    np.save(tmp_path / "b.npy", parts[1])
    sources = [Rows(parts[0], length=8), Rows(tmp_path / "b.npy"), parts[2]]
    expected = torch.cat([torch.from_numpy(np.concatenate([parts[0], np.zeros((3, 3, 3), np.float16)])).float(),
                          torch.from_numpy(parts[1]).float(), torch.from_numpy(parts[2]).float()]).std()
    assert streaming_std(sources, chunk_bytes=4 * 9 * 8) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("size", [16, 28, 64])
def test_area_mean_is_torchs_adaptive_average_pooling(size):
    rows = np.random.default_rng(2).normal(size=(3, 64, 64, 2)).astype(np.float32)
    torch_pooled = F.adaptive_avg_pool2d(torch.from_numpy(rows).permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    np.testing.assert_allclose(area_mean(rows, size), torch_pooled.numpy(), rtol=1e-5, atol=1e-6)


def test_flow_entries_are_float16_with_the_channels_and_size_asked(video, tmp_path, monkeypatch):
    monkeypatch.setenv("MECORE_CACHE", str(tmp_path / "cache"))
    crop = CropSpec(size=64, box="median")
    full = preprocess_video(video, crop, flow_steps=(2,), flow_method="dis", cache=False)["flow2"]
    assert full.dtype == np.float16 and full.shape == (8, 64, 64, 3)
    rows = flow_rows(video, crop, 2, "dis", size=16, channels="xy")
    assert rows.dtype == np.float16 and rows.shape == (10, 16, 16, 2)
    # the compact entry is the float32 flow's first two channels pooled, rounded once to float16
    reference = preprocess_video(video, crop, flow_steps=(2,), flow_method="dis", cache=False)
    flow32 = reference["flow2"][..., :2].astype(np.float32)  # float16 rounding of the full-size flow
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(flow32).permute(0, 3, 1, 2), 16).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(rows[:8].astype(np.float32), pooled, atol=2e-3, rtol=2e-3)
    assert not rows[8:].any()
    bytes_full = 4 * 64 * 64 * 3  # what a float32 three-channel row cost before
    assert rows.row_bytes * 48 == bytes_full  # float16 (2x), 2 of 3 channels (1.5x), 16 of 64 px (16x)
    plan = entry_plan(10, crop, flow_steps=(2,), flow_method="dis", flow_channels="xy", flow_size=16)
    assert plan["flow2"][2:] == ((8, 16, 16, 2), np.dtype(np.float16))
    with pytest.raises(ValueError, match="flow channels"):
        entry_plan(10, crop, flow_steps=(2,), flow_channels="xyz")
    np.testing.assert_array_equal(crop_rows(video, crop)[:], reference["crops"])


def test_a_trial_video_cut_short_has_its_own_entries(video, tmp_path):
    short = video.first(4)
    assert list(short.frame_numbers) == list(video.frame_numbers[:4]) and video.n_frames == 10
    assert short.first(2).max_frames == 2 and video.first(10) is video and short.first(8) is short
    crop = CropSpec(size=32)
    assert entry_path(tmp_path, short, "crops", {"crop": crop.cache_key()}) != \
        entry_path(tmp_path, video, "crops", {"crop": crop.cache_key()})
    whole = preprocess_video(video, crop, cache_root=tmp_path)["crops"]
    cut = preprocess_video(short, crop, cache_root=tmp_path)["crops"]
    assert cut.filename != whole.filename and len(cut) == 4
