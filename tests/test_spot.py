"""``mecore.spot``: a trained model on your own video equals the LOSO pipeline, from a frame folder or an .mp4;
bad input and untrained models stop with a clear error; the LOSO run's saved files stay as they were."""
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mecore import paths
from mecore.__main__ import main
from mecore.data import DatasetError, load_dataset
from mecore.config import Config
from mecore.loso import checkpoints_folder, fold_file, run_loso, safe_name
from mecore.models import LosoFold, get_model
from mecore.spot import SpotError, spot, trained_weights

VIDEO, SUBJECT = "15_0102", "s15"
COMPARED = ["onset", "offset", "type", "score"]


@pytest.fixture(scope="module")
def dataset(smoke_root):
    return load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """Smoke LOSO runs of MDMD and MESNet-CRN (their own configurations: found by name) and STSNet_SW (one
    epoch, deciding on the raw posterior so that the barely trained network spots something: found by its
    folder)."""
    torch.set_num_threads(1)
    results = tmp_path_factory.mktemp("loso")
    options = dict(scheduler="sync", results_dir=results, progress=False)
    return {"mdmd": run_loso("mdmd", dataset, "smoke", **options),
            "mesnet_crn": run_loso("mesnet_crn", dataset, "smoke", **options),
            "stsnet_sw": run_loso("stsnet_sw", dataset, "smoke", config={"train.epochs": 1, "test.decision_prior": "sampled"},
                                  **options)}


def loso_rows(run, video=VIDEO):
    rows = run.predictions[run.predictions["video"] == video]
    return rows[COMPARED].astype({"onset": "int64", "offset": "int64", "type": str}).reset_index(drop=True)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_mp4(frames: list[np.ndarray], path: Path, fps: float = 30.0) -> None:
    """MPEG-4 Part 2 ('mp4v', lossy), the codec every OpenCV wheel with FFmpeg writes."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), f"this OpenCV build cannot write MPEG-4 ('mp4v') to {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()


def weights_folder(run, dataset) -> Path:
    """Where the fold of ``SUBJECT`` of ``run`` keeps its trained weights."""
    stored = json.loads((run.folder / "config.json").read_text())["config"]
    config = get_model(run.model).config(run.profile, dataset.name).set(Config(stored).flat())
    fold = LosoFold(dataset, SUBJECT, [s for s in dataset.subjects if s != SUBJECT], config,
                    checkpoints_folder(run.folder) / safe_name(SUBJECT))
    return trained_weights(get_model(run.model), fold)[0].parent


def test_a_dataset_video_spotted_with_its_own_fold_gives_the_loso_intervals(runs, dataset, tmp_path):
    folder = dataset.video(VIDEO).folder
    for model in ("mdmd", "mesnet_crn"):
        by_name = spot(folder, model, dataset=dataset.name, profile="smoke", subject=SUBJECT, out_dir=tmp_path,
                       results_dir=runs[model].folder.parents[2], progress=False)
        assert len(by_name), f"{model} spotted nothing in {VIDEO}: nothing to compare"
        pd.testing.assert_frame_equal(by_name[COMPARED], loso_rows(runs[model]))
    by_folder = spot(folder, "stsnet_sw", checkpoint=runs["stsnet_sw"].folder, subject=SUBJECT, out_dir=tmp_path,
                     progress=False)
    assert len(by_folder) and by_folder["apex"].isna().all()
    pd.testing.assert_frame_equal(by_folder[COMPARED], loso_rows(runs["stsnet_sw"]))
    first, fps = dataset.video(VIDEO).first_frame, dataset.video(VIDEO).fps
    np.testing.assert_allclose(by_folder["onset_s"], (by_folder["onset"] - first) / fps)
    written = pd.read_csv(tmp_path / f"{VIDEO}_stsnet_sw.csv")
    assert list(written.columns) == ["onset", "apex", "offset", "type", "score", "onset_s", "offset_s"]
    assert written["onset"].tolist() == by_folder["onset"].tolist()


def test_b_an_mp4_runs_end_to_end_like_its_decoded_frames(runs, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MECORE_CACHE", str(tmp_path / "cache"))  # the decoded frames and their crops
    source = dataset.video(VIDEO)
    movie = tmp_path / "my video.mp4"
    write_mp4([image for _, image in source.iter_frames()], movie)
    checkpoint = runs["stsnet_sw"].folder
    spotted = spot(movie, "stsnet_sw", checkpoint=checkpoint, subject=SUBJECT, out_dir=tmp_path / "out",
                   progress=False)
    assert (tmp_path / "out" / "my video_stsnet_sw.csv").is_file()
    assert (tmp_path / "out" / "my video_stsnet_sw.png").stat().st_size > 0
    assert len(spotted) and spotted.attrs["fps"] == pytest.approx(30.0)
    decoded = list((tmp_path / "cache" / "spot" / "decoded").iterdir())
    assert len(decoded) == 1 and len(list(decoded[0].glob("frame_*.png"))) == source.n_frames
    stamp = decoded[0].stat().st_mtime_ns

    frames = tmp_path / "frames"  # the mp4 decoded here, independently of mecore.spot
    frames.mkdir()
    capture = cv2.VideoCapture(str(movie))
    for number in range(source.n_frames):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(frames / f"{number:05d}.png"), image)
    capture.release()
    with pytest.warns(UserWarning, match="frame folder carries no frame rate; reading it at synth_casme_sq's 30 fps"):
        from_frames = spot(frames, "stsnet_sw", checkpoint=checkpoint, subject=SUBJECT, out_dir=tmp_path / "out",
                           progress=False)
    pd.testing.assert_frame_equal(spotted, from_frames)
    again = spot(movie, "stsnet_sw", checkpoint=checkpoint, subject=SUBJECT, out_dir=tmp_path / "out", progress=False)
    pd.testing.assert_frame_equal(again, spotted)
    assert decoded[0].stat().st_mtime_ns == stamp  # decoded once


def test_c_bad_input_and_untrained_models_stop_with_a_clear_error(runs, dataset, tmp_path, capsys):
    trained = dict(model="mdmd", dataset=dataset.name, profile="smoke", results_dir=runs["mdmd"].folder.parents[2],
                   out_dir=tmp_path, progress=False)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    with pytest.raises(DatasetError, match="broken.mp4: OpenCV cannot read"):
        spot(broken, **trained)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no frame images"):
        spot(tmp_path / "empty", **trained)
    blank = tmp_path / "blank"
    blank.mkdir()
    for number in range(12):
        cv2.imwrite(str(blank / f"{number:03d}.png"), np.full((120, 120, 3), 128, np.uint8))
    with pytest.raises(DatasetError, match="no face found"):
        spot(blank, fps=30, **trained)
    folder = dataset.video(VIDEO).folder
    with pytest.raises(SpotError, match="a LOSO run of 'mdmd'.*not of 'stsnet_sw'"):
        spot(folder, "stsnet_sw", checkpoint=runs["mdmd"].folder, progress=False)
    with pytest.raises(SpotError, match="no config.json"):
        spot(folder, "mdmd", checkpoint=tmp_path, progress=False)
    recognition = tmp_path / "fr_run"
    recognition.mkdir()
    description = json.loads((runs["mdmd"].folder / "config.json").read_text())
    (recognition / "config.json").write_text(json.dumps({**description, "model": "fr", "task": "recognition"}))
    with pytest.raises(SpotError, match="a LOSO run of 'fr', a recognition model"):
        spot(folder, "mdmd", checkpoint=recognition, progress=False)
    (recognition / "config.json").write_text(json.dumps({**description, "dataset_content": "0" * 64}))
    with pytest.raises(SpotError, match="trained on another copy of 'synth_casme_sq'"):
        spot(folder, "mdmd", checkpoint=recognition, progress=False)
    with pytest.raises(SpotError, match="python -m mecore loso --model lbp_chi2 --dataset synth_casme_sq "
                                        "--profile smoke"):
        spot(folder, **{**trained, "model": "lbp_chi2"})
    with pytest.raises(SpotError, match="'fr' is a recognition model"):
        spot(folder, **{**trained, "model": "fr"})
    with pytest.raises(SpotError, match="'s99' is not a subject"):
        spot(folder, subject="s99", **trained)
    unfinished = tmp_path / "mdmd_run"
    shutil.copytree(runs["mdmd"].folder, unfinished)
    fold_file(unfinished, SUBJECT).unlink()
    with pytest.raises(SpotError, match="the fold of 's15' is not finished"):
        spot(folder, "mdmd", checkpoint=unfinished, subject=SUBJECT, progress=False)
    copy = tmp_path / "stsnet_run"
    shutil.copytree(runs["stsnet_sw"].folder, copy)
    shutil.copytree(runs["stsnet_sw"].checkpoints, checkpoints_folder(copy))  # the run's checkpoints, beside it
    (checkpoints_folder(copy) / safe_name(SUBJECT) / "checkpoint.pt").unlink()
    with pytest.raises(SpotError, match="trained weights of fold 's15'.* are missing"):
        spot(folder, "stsnet_sw", checkpoint=copy, subject=SUBJECT, progress=False)
    assert main(["spot", str(broken), "--model", "mdmd", "--profile", "smoke", "--results",
                 str(runs["mdmd"].folder.parents[2])]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mecore spot: error: ") and "OpenCV cannot read" in error and error.count("\n") == 1


def test_d_spotting_leaves_the_loso_runs_byte_identical(runs, dataset, tmp_path, capsys):
    stsnet, mesnet = runs["stsnet_sw"], runs["mesnet_crn"]
    saved = [stsnet.folder, mesnet.folder, weights_folder(mesnet, dataset), stsnet.checkpoints]
    before = [tree_digest(folder) for folder in saved]
    assert any(name.startswith("folds/") for name in before[0])  # fold results, with stsnet_sw's frame scores
    assert all(any(name.endswith("checkpoint.pt") for name in tree) for tree in before[2:])
    other_subject = dataset.video("16_0101").folder
    assert main(["spot", str(other_subject), "--model", "stsnet_sw", "--checkpoint", str(stsnet.folder),
                 "--subject", SUBJECT, "--out", str(tmp_path)]) == 0
    assert f"CSV: {tmp_path / '16_0101_stsnet_sw.csv'}" in capsys.readouterr().out
    spot(other_subject, "mesnet_crn", checkpoint=mesnet.folder, subject=SUBJECT, out_dir=tmp_path, progress=False)
    assert [tree_digest(folder) for folder in saved] == before


def test_e_a_video_shorter_than_the_models_clip_overlap_is_refused_before_any_work(runs, dataset, tmp_path):
    """MESNet cuts a video into clips overlapping by clip_overlap (20) frames: 20 frames or fewer gave
    ``range() arg 3 must not be zero`` deep in the model; now one line says how many frames it needs."""
    from mecore.spot import minimum_frames

    config = Config(json.loads((runs["mesnet_crn"].folder / "config.json").read_text())["config"])
    assert minimum_frames(get_model("mesnet_crn"), config) == config.input.clip_overlap + 1 == 21
    short = tmp_path / "short"
    short.mkdir()
    source = dataset.video(VIDEO)
    for number, image in list(source.iter_frames())[:20]:
        cv2.imwrite(str(short / f"{number:05d}.png"), image)
    with pytest.raises(DatasetError, match=r"short: 20 frames; mesnet_crn needs at least 21 \(its clips overlap "
                                           r"by 20 frames\)"):
        spot(short, "mesnet_crn", checkpoint=runs["mesnet_crn"].folder, subject=SUBJECT, fps=30, out_dir=tmp_path,
             progress=False)
    assert not list(tmp_path.glob("*.csv"))


def test_f_outputs_of_two_sources_with_one_stem_are_both_kept(runs, dataset, tmp_path, monkeypatch):
    """``control.avi`` after ``control.mp4`` (and a folder ``control`` elsewhere): each keeps its CSV, figure and
    provenance; spotting one of them again rewrites its own outputs only."""
    monkeypatch.setenv("MECORE_CACHE", str(tmp_path / "cache"))
    frames = [image for _, image in dataset.video(VIDEO).iter_frames()]
    write_mp4(frames, tmp_path / "control.mp4")
    avi = tmp_path / "control.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, frames[0].shape[1::-1])
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    folder = tmp_path / "elsewhere" / "control"
    shutil.copytree(dataset.video(VIDEO).folder, folder)
    options = dict(checkpoint=runs["mdmd"].folder, subject=SUBJECT, out_dir=tmp_path / "out", progress=False)
    first = spot(tmp_path / "control.mp4", "mdmd", **options)
    second = spot(avi, "mdmd", **options)
    third = spot(folder, "mdmd", fps=30, **options)
    paths = [Path(result.attrs["csv"]) for result in (first, second, third)]
    assert paths[0] == tmp_path / "out" / "control_mdmd.csv" and len(set(paths)) == 3
    for path, source in zip(paths, (tmp_path / "control.mp4", avi, folder)):
        assert path.is_file() and path.with_suffix(".png").is_file()
        assert json.loads(path.with_suffix(".json").read_text())["source"] == str(source.resolve())
    before = paths[0].stat().st_mtime_ns
    again = spot(avi, "mdmd", **options)
    assert Path(again.attrs["csv"]) == paths[1] and paths[0].stat().st_mtime_ns == before


def test_g_two_faces_say_which_one_is_spotted(dataset, tmp_path):
    """Two people side by side: the cropping takes the detector's most confident face; a warning says which
    (its place from the left and its box), and the returned record carries it."""
    from mecore.data.dataset import Video
    from mecore.preprocess import detect_face
    from mecore.spot import face_candidates, require_face

    left, right = dataset.video(VIDEO), dataset.video("16_0101")
    folder = tmp_path / "two"
    folder.mkdir()
    for i, ((_, a), (_, b)) in enumerate(zip(left.iter_frames(), right.iter_frames())):
        if i == 4:
            break
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.hstack([a, b]))
    video = Video("spot", "spot", "two", folder, 30.0)
    frame = video.frame(0)
    boxes = face_candidates(frame)
    assert len(boxes) == 2 and boxes[0, 0] < boxes[1, 0]
    with pytest.warns(UserWarning, match=r"2 faces in frame 0 of video 'two'; spotting the (left|right) one "
                                         r"\(x \d+-\d+, y \d+-\d+ px, the detector's most confident\)"):
        face = require_face(video, samples=2)
    chosen = detect_face(frame)
    assert face["faces_there"] == 2 and face["box"] == [round(float(v), 1) for v in chosen]
    assert face["rank_there"] == (1 if chosen[0] < frame.shape[1] / 2 else 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = require_face(left)  # one face: no warning, rank 1 of 1
    assert one["faces"] == 1 and one["rank"] == 1


def test_h_spot_names_an_unwritable_output_folder_a_clip_dataset_and_the_root_to_train_on(runs, dataset, tmp_path,
                                                                                             monkeypatch):
    from mecore.spot import train_command
    from test_bad_runs import read_only

    trained = dict(model="mdmd", dataset=dataset.name, profile="smoke", results_dir=runs["mdmd"].folder.parents[2],
                   progress=False)
    out = tmp_path / "read-only"
    read_only(monkeypatch, out)
    with pytest.raises(SpotError, match=f"{out}.*: cannot write spot's output \\(Read-only file system\\); make "
                                        f"the folder writable or pass another --out"):
        spot(dataset.video(VIDEO).folder, out_dir=out, **trained)
    monkeypatch.undo()
    with pytest.raises(SpotError, match="dataset 'synth_casme2' holds expression clips, not long videos"):
        spot(dataset.video(VIDEO).folder, **{**trained, "dataset": "synth_casme2"})
    assert "--dataset casme_sq --root /data/CASME_sq --profile paper" in \
        train_command("mesnet_crn", "casme_sq", "paper", root="/data/CASME_sq")


def test_i_a_recogniser_adds_emotions_to_the_csv_and_the_timeline(runs, dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")  # recognisers trained here stay here
    folder = dataset.videos[VIDEO].folder
    assert main(["spot", str(folder), "--model", "mdmd", "--checkpoint", str(runs["mdmd"].folder), "--out",
                 str(tmp_path / "out"), "--recogniser", "fr"]) == 0
    table = pd.read_csv(tmp_path / "out" / f"{VIDEO}_mdmd.csv")
    assert len(table) == len(loso_rows(runs["mdmd"]))
    assert table["emotion"].isin(["negative", "positive", "surprise"]).all()
    assert np.allclose(table[["p_negative", "p_positive", "p_surprise"]].sum(axis=1), 1, atol=1e-5)
    assert (tmp_path / "out" / f"{VIDEO}_mdmd.png").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(["spot", str(folder), "--model", "mdmd", "--checkpoint", str(runs["mdmd"].folder), "--recogniser", "svm"])
    assert stopped.value.code == 2 and "invalid choice: 'svm'" in capsys.readouterr().err
    with pytest.raises(SpotError, match="unknown recogniser 'svm'; choose one of fr, fr_basic_inception"):
        spot(folder, "mdmd", checkpoint=runs["mdmd"].folder, out_dir=tmp_path / "out", recogniser="svm")
