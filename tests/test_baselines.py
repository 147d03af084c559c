"""LBP-chi^2 and MDMD baselines: curves peak at a transient facial change and become intervals."""
import cv2
import numpy as np
import pandas as pd
import pytest

from mecore.baselines import (
    VideoCurves,
    dataset_curves,
    lbp_chi2_curve,
    lbp_histograms,
    main_directional_difference,
    mdmd_curve,
    megc2020_parameters,
    spot_intervals,
    video_curves,
)
from mecore.preprocess import CropSpec


def texture(size=64, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (size, size)).astype(np.uint8), (0, 0), 1.5)


def video_with_transient(n=120, start=56, length=9, change="motion", seed=0):
    """A still textured face whose lower-left region changes for ``length`` frames from ``start``.

    ``change="motion"``: the region's texture moves 2 px (what optical flow sees);
    ``"appearance"``: it is replaced by a finer texture, as wrinkles would be (what LBP sees).
    """
    base = texture(seed=seed)
    frames = np.repeat(base[None], n, axis=0)
    changed = np.roll(base, 2, axis=1) if change == "motion" else np.random.default_rng(seed + 2).integers(0, 256, base.shape)
    frames[start:start + length, 40:60, 5:30] = changed[40:60, 5:30]
    noise = np.random.default_rng(seed + 1).normal(0, 1.0, frames.shape)
    return np.clip(frames + noise, 0, 255).astype(np.uint8)


def test_megc2020_parameters_scale_with_fps():
    assert megc2020_parameters("synth_casme_sq", 30.0) == {"k": {"micro": 12, "macro": 39},
                                                           "lengths": {"micro": (7, 16), "macro": (17, None)}}
    assert megc2020_parameters("samm_lv")["k"] == {"micro": 80, "macro": 260}
    assert megc2020_parameters("casme_sq", 60.0)["k"] == {"micro": 24, "macro": 78}
    with pytest.raises(ValueError):
        megc2020_parameters("casme2")


def test_lbp_histograms_are_normalised_per_block():
    histograms = lbp_histograms(video_with_transient(n=3))
    assert histograms.shape == (3, 36, 59)
    assert np.allclose(histograms.sum(axis=-1), 1.0, atol=1e-5)


def test_lbp_chi2_curve_peaks_at_the_transient():
    k = 6
    curve = lbp_chi2_curve(lbp_histograms(video_with_transient(change="appearance")), k)
    defined = np.flatnonzero(np.isfinite(curve))
    assert defined[0] == 2 * k and defined[-1] == 120 - 2 * k - 1
    assert (curve[defined] >= 0).all()
    assert 54 <= np.nanargmax(curve) <= 66
    assert np.isnan(lbp_chi2_curve(lbp_histograms(video_with_transient(n=20)), k)).all()


def test_main_direction_difference_sees_motion_that_returns():
    still = np.zeros((60, 60, 2), np.float32)
    moving = still.copy()
    moving[:10, :10, 0] = 3.0  # rightward motion in the top-left block only
    assert main_directional_difference(moving, still) > 0
    assert main_directional_difference(moving, moving) == 0
    assert main_directional_difference(still, still) == 0


def test_mdmd_curve_peaks_at_the_transient():
    k = 6
    curve = mdmd_curve(video_with_transient(), k)
    defined = np.flatnonzero(np.isfinite(curve))
    assert defined[0] == 2 * k - 1 and defined[-1] == 120 - 2 * k
    assert 54 <= np.nanargmax(curve) <= 66


@pytest.mark.parametrize("method, change", [("lbp_chi2", "appearance"), ("mdmd", "motion")])
def test_spot_intervals_finds_the_transient(method, change):
    frames = video_with_transient(change=change)
    curves = video_curves(frames, np.arange(1, 121), method, {"micro": 6}, "v", {"micro": (3, 16)})
    for mode in ("runs", "peaks"):
        spotted = spot_intervals(curves, p=0.5, mode=mode)
        assert list(spotted.columns) == ["video", "onset", "offset", "type", "score"]
        assert len(spotted) >= 1 and (spotted["type"] == "micro").all()
        best = spotted.loc[spotted["score"].idxmax()]
        assert best["onset"] <= 62 and best["offset"] >= 57, mode


def test_spot_intervals_length_filter_and_empty_curves():
    curve = np.full(40, np.nan)
    curve[10:30] = 0.0
    curve[15:25] = 1.0  # one run of 10 frames
    curves = VideoCurves("v", np.arange(40), {"micro": curve, "macro": np.full(40, np.nan)}, {"micro": 3, "macro": 9},
                         {"micro": (2, 5), "macro": (6, None)})
    assert spot_intervals(curves, p=0.5).empty
    kept = spot_intervals(curves, p=0.5, length_filter=False)
    assert kept[["onset", "offset"]].values.tolist() == [[15, 24]]
    with pytest.raises(ValueError):
        spot_intervals(curves, p=0.5, mode="nms")


def test_baselines_run_on_a_synthetic_video():
    from mecore.data import load_dataset

    dataset = load_dataset("synth_casme_sq", profile="smoke")
    name = sorted(dataset.videos)[0]
    for method in ("lbp_chi2", "mdmd"):
        curves = dataset_curves(dataset, method, CropSpec(size=48), cache=False, videos=[name])
        spotted = spot_intervals(curves, p=0.1, mode="peaks")
        assert isinstance(spotted, pd.DataFrame) and len(spotted) > 0
        assert spotted["video"].eq(name).all() and spotted["type"].isin(["micro", "macro"]).all()


def test_curves_are_cached_once_per_video(tmp_path, monkeypatch):
    from mecore import baselines
    from mecore.data import load_dataset

    monkeypatch.setenv("MECORE_CACHE", str(tmp_path))
    dataset = load_dataset("synth_casme_sq", profile="smoke")
    name = sorted(dataset.videos)[0]
    first = dataset_curves(dataset, "lbp_chi2", CropSpec(size=32), videos=[name])[0]
    monkeypatch.setattr(baselines, "video_curves", lambda *args, **kwargs: pytest.fail("curves recomputed"))
    again = dataset_curves(dataset, "lbp_chi2", CropSpec(size=32), videos=[name])[0]
    assert again.curves.keys() == first.curves.keys() and again.k == first.k and again.lengths == first.lengths
    for kind in first.curves:
        np.testing.assert_array_equal(again.curves[kind], first.curves[kind])


def test_peak_intervals_are_clipped_to_the_video_not_to_its_scored_part():
    curve = np.full(100, np.nan)
    curve[20:80] = 0.0
    curve[[22, 50, 78]] = 1.0
    curves = VideoCurves("v", np.arange(1, 101), {"micro": curve}, {"micro": 25})
    spotted = spot_intervals(curves, p=0.5, mode="peaks")
    assert spotted[["onset", "offset"]].values.tolist() == [[1, 48], [26, 76], [54, 100]]
