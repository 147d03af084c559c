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
from mecore.config import Config
from mecore.metrics import spotting_counts
from mecore.models import LosoFold, ModelSpec, register
from mecore.preprocess import CropSpec

P_GRID = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6]
CONVENTION = "megc2020"  # the convention p is selected under (the MEGC 2020 baseline's)


def _configs(method: str) -> dict[str, Config]:
    """One configuration for every profile: the method has nothing to size."""
    config = Config({"input": {"crop": {"size": 64, "box": "median", "detect_every": 15}, "max_fps": None},
                     "train": {"method": method, "mode": "runs", "p_grid": P_GRID, "t_eval": 0.5},
                     "test": {}, "trial": {"max_steps": None}, "run": {"repeats": 1}})
    return {profile: config for profile in ("smoke", "default", "large", "paper")}


def select_p(curves, ground_truth: pd.DataFrame, config: Config) -> tuple[float, pd.DataFrame]:
    """The ``p`` of the grid ``config.p_grid`` (the ``train`` group) with the best overall F1 on ``curves``
    (ties: the larger ``p``, fewer intervals), and the table of every candidate."""
    rows = []
    for p in config.p_grid:
        spotted = spot_intervals(curves, p, mode=config.mode)
        overall = spotting_counts(ground_truth, spotted, CONVENTION, config.t_eval,
                                  videos=[c.video for c in curves]).loc["overall"]
        rows.append({"p": p, "f1": overall["f1"], "tp": overall["tp"], "n_spotted": overall["n_spotted"]})
    table = pd.DataFrame(rows)
    best = table.sort_values(["f1", "p"], ascending=False).iloc[0]
    return float(best["p"]), table


def run_fold(fold: LosoFold) -> pd.DataFrame:
    """Fit ``p`` on the training subjects' videos, spot the left-out subject's videos."""
    train = fold.config.train
    curves = dataset_curves(fold.dataset, train.method, crop=CropSpec(**fold.config.input.crop),
                            videos=fold.train_videos + fold.test_videos, progress=fold.progress)
    by_video = {c.video: c for c in curves}
    p, _ = select_p([by_video[v] for v in fold.train_videos], fold.train_rows, train)
    spotted = spot_intervals([by_video[v] for v in fold.test_videos], p, mode=train.mode)
    spotted["p"] = p
    return spotted


def no_checkpoints(fold: LosoFold) -> list:
    """A finished fold reloads no weights: ``p`` is re-selected from the cached curves."""
    return []


for _method, _paper in (("lbp_chi2", "Moilanen et al. 2014"), ("mdmd", "Wang et al. 2017")):
    register(ModelSpec(name=_method, task="spotting", paper=_paper, run_fold=run_fold,
                       configs=_configs(_method), spotting_convention=CONVENTION,
                       checkpoints=no_checkpoints))
