"""The classical baselines (LBP-chi^2, MDMD) as LOSO models: ``p`` chosen on the training subjects.

MESNet Table X reports each baseline at one threshold ``p`` per dataset (Sec. IV-C-5), chosen on
the whole dataset. Under LOSO the fair reading is that ``p`` — the method's only free parameter —
is what "training" fits: each fold takes the ``p`` of ``p_grid`` with the best overall F1 on the
training subjects' videos and spots the left-out subject's videos with it. The curves come from
:mod:`mecore.baselines` (MEGC 2020 baseline ``k`` and length limits); face crops are cached, so
folds after the first cost little.

``python -m mecore loso --model mdmd --dataset synth_casme_sq --profile smoke`` runs it.
"""
from __future__ import annotations

import pandas as pd

from mecore.baselines import dataset_curves, spot_intervals
from mecore.metrics import spotting_counts
from mecore.models import LosoFold, ModelSpec, register
from mecore.preprocess import CropSpec

P_GRID = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6]
CONVENTION = "megc2020"  # the convention p is selected under (the MEGC 2020 baseline's)


def _configs(method: str) -> dict:
    base = {"method": method, "mode": "runs", "p_grid": P_GRID, "t_eval": 0.5,
            "crop": {"size": 64, "box": "median", "detect_every": 15}}
    return {profile: dict(base) for profile in ("smoke", "default", "large", "paper")}


def select_p(curves, ground_truth: pd.DataFrame, config: dict) -> tuple[float, pd.DataFrame]:
    """The ``p`` of the grid with the best overall F1 on ``curves`` (ties: the larger ``p``,
    fewer intervals), and the table of every candidate."""
    rows = []
    for p in config["p_grid"]:
        spotted = spot_intervals(curves, p, mode=config["mode"])
        overall = spotting_counts(ground_truth, spotted, CONVENTION, config["t_eval"],
                                  videos=[c.video for c in curves]).loc["overall"]
        rows.append({"p": p, "f1": overall["f1"], "tp": overall["tp"], "n_spotted": overall["n_spotted"]})
    table = pd.DataFrame(rows)
    best = table.sort_values(["f1", "p"], ascending=False).iloc[0]
    return float(best["p"]), table


def run_fold(fold: LosoFold) -> pd.DataFrame:
    """Fit ``p`` on the training subjects' videos, spot the left-out subject's videos."""
    config = fold.config
    train_videos = sorted(name for name, video in fold.dataset.videos.items() if video.subject in fold.train_subjects)
    curves = dataset_curves(fold.dataset, config["method"], crop=CropSpec(**config["crop"]),
                            videos=train_videos + fold.test_videos, progress=fold.progress)
    by_video = {c.video: c for c in curves}
    p, _ = select_p([by_video[v] for v in train_videos], fold.train_rows, config)
    spotted = spot_intervals([by_video[v] for v in fold.test_videos], p, mode=config["mode"])
    spotted["p"] = p
    return spotted


for _method, _paper in (("lbp_chi2", "Moilanen et al. 2014"), ("mdmd", "Wang et al. 2017")):
    register(ModelSpec(name=_method, task="spotting", paper=_paper, run_fold=run_fold,
                       configs=_configs(_method), spotting_convention=CONVENTION))
