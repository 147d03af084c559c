"""Threshold sweeps and the comparison of spotters: tables and figures the chapters 20 and 30 draw.

Notebook 20 (``20_threshold_sweeps.ipynb``) moves the post-processing thresholds of each spotter on
finished LOSO runs: MESNet's T_CPN, T_CRN, T_nms and T_eval (Wang et al. 2021, Tables VII-IX), BiFPN-I3D's
``top_threshold`` (He et al. 2023, Table II), STSNet_SW's post-processing (Fu et al. 2023, Tables 2-4), the
threshold of Yap et al.'s IoU methods (Yap et al. 2022, Tables 5-6) and the baselines' ``p`` (MESNet
Table X). Notebook 30 (``30_comparison.ipynb``) sets every spotter side by side under one protocol: the
main table, MESNet Table X's operating points, precision against recall, per-subject F1, times and the
papers' own numbers.

Every function takes what it needs as arguments; the chapters keep the calls, the checks and the
verdicts. The papers' numbers come from :mod:`mecore.references` (real datasets); the figures are saved
where the caller says.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mecore import references
from mecore.baselines import spot_intervals
from mecore.data.dataset import dataset_family
from mecore.metrics import spotting_counts

PAPER_DATASET = {"casme_sq": "CAS(ME)^2", "samm_lv": "SAMM-LV"}  # dataset family -> the name the papers print
TYPES = ["micro", "macro", "overall"]  # the rows of a spotting_counts table the comparison reports
MAIN_COLUMNS = {"tp": "TP", "fp": "FP", "fn": "FN", "precision": "P", "recall": "R", "f1": "F1"}
PAPER_F1_ROWS = {  # model -> the table, row and (macro, micro, overall) columns of its paper's F1 at our setting
    "yap3dcnn": ("5", "Ours*", ["MaE", "ME", "Overall"]),
    "bifpn_i3d": ("III", "Proposed", ["MaE", "ME", "All"]),
}


# ---------------------------------------------------------------- tables of one sweep (notebook 20)

def paper_dataset(dataset: str) -> str:
    """The name the swept papers print for ``dataset``'s family (CAS(ME)^2 or SAMM-LV); ValueError for any
    other dataset, whose sweeps have no paper to stand beside."""
    family = dataset_family(dataset)
    if family not in PAPER_DATASET:
        raise ValueError(f"the swept papers report CAS(ME)^2 and SAMM-LV only; {dataset!r} is neither")
    return PAPER_DATASET[family]


def counts_row(ground_truth: pd.DataFrame, spotted: pd.DataFrame, convention: str, kind: str = "overall",
               t_eval: float = 0.5) -> dict:
    """One row of a sweep table: Prediction (spotted intervals), TP, Find (ground truths found), recall,
    precision and F1 of ``kind`` (micro, macro, overall) in ``convention`` at IoU ``t_eval`` (the columns of
    MESNet Tables VII-IX)."""
    counts = spotting_counts(ground_truth, spotted, convention, t_eval).loc[kind]
    return {"Prediction": int(counts["n_spotted"]), "TP": int(counts["tp"]), "Find": int(counts["found"]),
            "Recall": counts["recall"], "Precision": counts["precision"], "F1": counts["f1"]}


def non_increasing(values) -> bool:
    """Whether ``values`` never rise from one entry to the next (what a stricter threshold must give)."""
    return bool((np.diff(np.asarray(values, float)) <= 0).all())


def mesnet_paper_table(number: str, family: str) -> pd.DataFrame:
    """MESNet's Table ``number`` (VII, VIII or IX) for dataset ``family``, its row label T as a column."""
    return references.table("mesnet", number, family).reset_index()


def mesnet_sweep(ground_truth: pd.DataFrame, swept: Mapping, knob: str, values: Sequence, stage: str,
                 t_eval: float = 0.5) -> pd.DataFrame:
    """MESNet Table VII / VIII in our numbers: one row per value ``t`` of ``knob`` (t_cpn, t_crn, t_nms), the
    micro-expression counts (MESNet metric) of ``swept[knob, t][stage]`` (stage cpn or crn)."""
    return pd.DataFrame([{knob: t, **counts_row(ground_truth, swept[knob, t][stage], "mesnet", "micro", t_eval)}
                         for t in values])


def t_eval_sweep(ground_truth: pd.DataFrame, spotted: pd.DataFrame, grid: Sequence) -> pd.DataFrame:
    """MESNet Table IX in our numbers: the same spotted intervals scored (MESNet metric, micro) at each IoU
    threshold of ``grid``, one row per T_eval."""
    return pd.DataFrame([{"t_eval": t, **counts_row(ground_truth, spotted, "mesnet", "micro", t)} for t in grid])


def with_paper(ours: pd.DataFrame, knob: str, paper: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """``ours`` with the paper's ``columns`` (paper name -> our name) beside it, labelled 'paper ...', matched on
    ``knob`` (the paper's row label T); rows the paper lacks get NaN."""
    reference = paper.rename(columns={"T": knob, **{k: f"paper {v}" for k, v in columns.items()}})
    return ours.merge(reference[[knob, *(f"paper {v}" for v in columns.values())]], on=knob, how="left")


def paper_lines(paper: pd.DataFrame, knob: str, columns: Mapping[str, str]) -> pd.DataFrame:
    """The paper's ``columns`` renamed to ours (paper name -> our name) against ``knob``, rows with a gap
    dropped: the dashed lines of :func:`plot_sweep`."""
    return paper.rename(columns={"T": knob, **columns})[[knob, *columns.values()]].dropna()


def top_threshold_table(ground_truth: pd.DataFrame, scored: pd.DataFrame, thresholds: Sequence,
                        t_eval: float = 0.5) -> pd.DataFrame:
    """He et al.'s Table II in our numbers: for each ``top_threshold`` the intervals of ``scored`` scoring at
    least it, counted overall (MESNet metric), with the macro (MaE) and micro (ME) F1."""
    rows = []
    for threshold in thresholds:
        chosen = scored[scored["score"] >= threshold]
        by_type = spotting_counts(ground_truth, chosen, "mesnet", t_eval)["f1"]
        rows.append({"top_threshold": threshold, **counts_row(ground_truth, chosen, "mesnet", t_eval=t_eval),
                     "MaE F1": by_type["macro"], "ME F1": by_type["micro"]})
    return pd.DataFrame(rows)


def stsnet_paper_overall(postprocess: str, family: str) -> list:
    """Overall precision, recall and F1 of Fu et al.'s table for post-processing ``postprocess`` (Tables 2-4)."""
    number = references.STSNET_POSTPROCESSING_TABLE[postprocess]
    return references.table("stsnet_sw", number, family).loc["overall", ["Precision", "Recall", "F1-score"]].tolist()


def stsnet_postprocess_table(ground_truth: pd.DataFrame, variants: Mapping[str, pd.DataFrame], family: str,
                             t_eval: float = 0.5) -> pd.DataFrame:
    """Fu et al.'s Tables 2-4 side by side: one row per post-processing of ``variants`` (name -> spotted
    intervals), counted overall with STSNet_SW's metric, the paper's precision, recall and F1 beside."""
    return pd.DataFrame([{"postprocess": name, **counts_row(ground_truth, spotted, "stsnet", t_eval=t_eval),
                          **dict(zip(("paper Precision", "paper Recall", "paper F1"),
                                     stsnet_paper_overall(name, family)))}
                         for name, spotted in variants.items()])


def yap_spot(folds: Mapping[str, dict], method: str, threshold: float | None = None) -> pd.DataFrame:
    """Every fold's test videos spotted by Yap et al.'s IoU ``method`` (automated, Sec. 4.1, or manual,
    Sec. 4.2) at ``threshold`` for both types (None: each fold's ROC thresholds). ``folds``: subject -> the
    saved per-frame scores of :func:`mecore.models.yap3dcnn.load_frame_scores`."""
    from mecore.models import yap3dcnn  # here, not above: it loads torch, which no other table needs

    tables = []
    for subject, fold in folds.items():
        thresholds = fold["thresholds"] if threshold is None else {(method, t): threshold for t in yap3dcnn.TYPES}
        spotted = yap3dcnn.spot(fold["frame_scores"], method, thresholds, fold["skips"], fold["fps"])
        spotted.insert(0, "subject", subject)
        tables.append(spotted)
    return pd.concat(tables, ignore_index=True)


def yap_roc_threshold(folds: Mapping[str, dict], method: str) -> float:
    """The mean over folds and types of the ROC thresholds the LOSO run chose for ``method``."""
    from mecore.models import yap3dcnn

    return float(np.mean([f["thresholds"][method, t] for f in folds.values() for t in yap3dcnn.TYPES]))


def p_sweep(ground_truth: pd.DataFrame, curves: list, p_grid: Sequence, mode: str,
            t_eval: float = 0.5) -> pd.DataFrame:
    """The baselines' ``p`` (threshold mean + p (max - mean), MESNet Table X) swept on every video's ``curves``
    at once, one row per ``p``, counted overall with the MEGC 2020 metric."""
    return pd.DataFrame([{"p": p, **counts_row(ground_truth, spot_intervals(curves, p, mode=mode), "megc2020",
                                               t_eval=t_eval)} for p in p_grid])


# ---------------------------------------------------------------- figures of notebook 20

def plot_sweep(tables: Mapping[str, pd.DataFrame], x: str, title: str, path: Path,
               paper: Mapping[str, pd.DataFrame] | None = None, marks: Mapping[str, float] | None = None,
               paper_name: str = "") -> Path:
    """Precision, recall, F1 and the number of spotted intervals against ``x``: one line per table of
    ``tables``, the papers' values (``paper``, label -> table, on dataset ``paper_name``) dashed, ``marks``
    (label -> x) as vertical lines. Saved to ``path``, shown, and ``path`` returned."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
    for ax, column in zip(axes, ("Precision", "Recall", "F1", "Prediction")):
        for label, table in tables.items():
            ax.plot(table[x], table[column], marker="o", ms=3, label=label)
        for label, table in (paper or {}).items():
            if column in table:
                ax.plot(table[x], table[column], ls="--", marker="x", ms=4, alpha=0.7,
                        label=f"{label} (paper, {paper_name}, real data)")
        for label, value in (marks or {}).items():
            ax.axvline(value, color="0.5", lw=0.8, ls=":")
            ax.text(value, 0.98, label, rotation=90, va="top", ha="right", fontsize=7,
                    transform=ax.get_xaxis_transform())
        ax.set_xlabel(x), ax.set_title(column if column != "Prediction" else "spotted intervals")
    axes[3].set_yscale("symlog", linthresh=1), axes[3].set_ylim(bottom=0)
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.show()
    return path


def draw_timeline(ground_truth: pd.DataFrame, spotted: pd.DataFrame, video: str, frames: Sequence,
                  threshold: float, t_eval: float = 0.5) -> plt.Figure:
    """One video's timeline: its ground truth (micro dark, macro light) above the ``spotted`` intervals whose
    score is at least ``threshold``, coloured by score; the title counts them with MESNet's metric (micro).
    ``frames``: the video's frame numbers. Returns the figure, neither shown nor saved."""
    colours = plt.get_cmap("viridis")
    truth = ground_truth[ground_truth["video"] == video]
    shown = spotted[(spotted["video"] == video) & (spotted["score"] >= threshold)]
    row = counts_row(truth, shown, "mesnet", "micro", t_eval)
    fig, ax = plt.subplots(figsize=(12, 2.2))
    for expression in truth.itertuples():
        ax.broken_barh([(expression.onset, expression.offset - expression.onset + 1)], (1.1, 0.8),
                       color="tab:red" if expression.type == "micro" else "mistyrose")
    for interval in shown.itertuples():
        ax.broken_barh([(interval.onset, interval.offset - interval.onset + 1)], (0.1, 0.8),
                       color=colours(interval.score), alpha=0.8)
    fig.colorbar(plt.cm.ScalarMappable(cmap=colours), ax=ax, label="CRN ME probability", pad=0.01)
    ax.set_xlim(frames[0], frames[-1]), ax.set_ylim(0, 2)
    ax.set_yticks([0.5, 1.5], ["CRN", "ground truth"]), ax.set_xlabel("frame")
    ax.set_title(f"{video}, T_CRN = {threshold:.2f}: {row['Prediction']} spotted, {row['TP']} hit, "
                 f"{row['Find']} of {int((truth['type'] == 'micro').sum())} MEs found "
                 f"(MESNet metric, T_eval {t_eval})", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- tables of the comparison (notebook 30)

def dataset_summary(loaded: Mapping) -> pd.DataFrame:
    """One row per dataset of ``loaded`` (name -> :class:`mecore.data.dataset.Dataset`): frame rate, subjects,
    videos, frames and the numbers of micro- and macro-expressions."""
    return pd.DataFrame([{"dataset": name, "fps": d.annotations["fps"].iloc[0], "subjects": len(d.subjects),
                          "videos": len(d.videos), "frames": sum(v.n_frames for v in d.videos.values()),
                          "micro": int((d.annotations["type"] == "micro").sum()),
                          "macro": int((d.annotations["type"] == "macro").sum())} for name, d in loaded.items()]
                        ).set_index("dataset")


def main_row(counts: pd.DataFrame) -> dict:
    """One row of the comparison's main table, {(type, column): value} for every type of :data:`TYPES` and
    column of :data:`MAIN_COLUMNS`, from a :func:`mecore.metrics.spotting_counts` table."""
    return {(kind, label): counts.loc[kind, column] for kind in TYPES for column, label in MAIN_COLUMNS.items()}


def main_table(counts: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The main table: one row per method of ``counts`` (method -> its spotting_counts table), columns
    (type, TP / FP / FN / P / R / F1)."""
    table = pd.DataFrame.from_dict({model: main_row(c) for model, c in counts.items()}, orient="index")
    table = table.rename_axis("method")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def table_x_settings(family: str) -> dict:
    """MESNet Table X's operating points (Sec. IV-C-5) for ``family``: selection (General, High F1-score) ->
    MESNet's thresholds and each baseline's p (mecore.references)."""
    points = references.table("mesnet", "X settings", family)
    return {selection: {"mesnet": {"t_cpn": float(row["t_cpn"]), "t_crn": float(row["t_crn"])},
                        "mdmd": float(row["mdmd"]), "lbp_chi2": float(row["lbp_chi2"])}
            for selection, row in points.iterrows()}


def spot_every_video(data, curves: list, p: float, mode: str) -> pd.DataFrame:
    """A baseline at a fixed ``p`` on every video of ``data`` at once (no LOSO, as MESNet Table X fixes ``p``
    for a whole dataset), each interval labelled with its video's subject."""
    subject_of = {video: data.videos[video].subject for video in data.videos}
    spotted = spot_intervals(curves, p, mode=mode)
    spotted.insert(0, "subject", spotted["video"].map(subject_of))
    return spotted


def table_x_row(ground_truth: pd.DataFrame, spotted: pd.DataFrame, dataset: str, selection: str, method: str,
                setting: Mapping, t_eval: float = 0.5) -> dict:
    """One row in the layout of MESNet Table X: micro-expressions of ``spotted`` counted with MESNet's metric
    (MEs, Prediction, TP / Find, recall, precision, F1), the paper's row for (``selection``, ``method``) on
    ``dataset``'s family beside it (None where the paper has none)."""
    micro = spotting_counts(ground_truth, spotted, "mesnet", t_eval).loc["micro"]
    paper_x = references.table("mesnet", "X", dataset_family(dataset))  # real data
    paper = paper_x.loc[[(selection, method)]] if (selection, method) in paper_x.index else paper_x.iloc[:0]
    return {"dataset": dataset, "selection": selection, "method": method,
            "setting": ", ".join(f"{key} {value}" for key, value in setting.items()),
            "MEs": int(micro["n_gt"]), "Prediction": int(micro["n_spotted"]),
            "TP / Find": f"{micro['hits']} / {micro['found']}",
            "recall": micro["recall"], "precision": micro["precision"], "F1": micro["f1"],
            "paper Prediction": paper["Prediction"].item() if len(paper) else None,
            "paper TP / Find": f"{paper['TP'].item()} / {paper['Find'].item()}" if len(paper) else None,
            "paper F1": paper["F1"].item() if len(paper) else None}


def precision_recall_point(dataset: str, method: str, point: str, counts: pd.DataFrame) -> dict:
    """One marker of the precision-recall figure: micro and overall precision, recall and F1 of a
    spotting_counts table ``counts``, labelled by ``dataset``, ``method`` and operating ``point``."""
    return {"dataset": dataset, "method": method, "point": point,
            **{f"{k} {c}": counts.loc[k, c] for k in ("micro", "overall") for c in ("precision", "recall", "f1")}}


def per_subject_f1(folds: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Overall F1 of each LOSO fold: one row per method of ``folds`` (method -> its folds table), one column
    per left-out subject."""
    return pd.DataFrame({model: table.set_index("subject")["f1"] for model, table in folds.items()}).T


def paper_f1(model: str, family: str, postprocess: str | None = None) -> tuple[str, dict]:
    """The source and {type: F1} of ``model``'s paper at our setting (mecore.references, real data): Yap et
    al. Table 5 "Ours*", He et al. Table III "Proposed", and for STSNet_SW the table of post-processing
    ``postprocess`` (Fu et al. Tables 2-4)."""
    if model == "stsnet_sw":
        number = references.STSNET_POSTPROCESSING_TABLE[postprocess]
        f1 = references.table(model, number, family)["F1-score"]
        return references.reference(model, number).source, {kind: f1[kind] for kind in ("macro", "micro", "overall")}
    number, row, columns = PAPER_F1_ROWS[model]
    values = references.table(model, number, family).loc[row, columns]
    return f"{references.reference(model, number).source}, {row}", dict(zip(("macro", "micro", "overall"), values))


# ---------------------------------------------------------------- figures of notebook 30

def f1_isocurve(f1: float, recall: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points (recall, precision) of equal F1 ``f1`` over the ``recall`` grid, where the precision lies in
    (0, 1]: precision = f1 r / (2 r - f1), asymptotic at r = f1 / 2."""
    recall = np.asarray(recall, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = f1 * recall / (2 * recall - f1)
    keep = (precision > 0) & (precision <= 1)
    return recall[keep], precision[keep]


def plot_precision_recall(points: pd.DataFrame, datasets: Sequence[str], colours: Mapping[str, tuple],
                          markers: Mapping[str, str], title: str, path: Path) -> None:
    """Precision against recall, one row of panels per dataset (left micro, right overall): one marker per row
    of ``points`` (see :func:`precision_recall_point`), coloured by method and shaped by operating point,
    with grey lines of equal F1; a precision of 0/0 drawn at 0. ``title`` ends each panel's title. Saved to
    ``path`` and shown."""
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 4.6 * len(datasets)), squeeze=False)
    recall_grid = np.linspace(0.005, 1, 200)
    for row_axes, name in zip(axes, datasets):
        for ax, kind in zip(row_axes, ("micro", "overall")):
            for f1 in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8):
                ax.plot(*f1_isocurve(f1, recall_grid), color="0.85", lw=0.8, zorder=0)
                ax.text(1.0, f1 / (2 - f1), f"F1 {f1}", fontsize=7, color="0.5", ha="right", va="bottom")
            for row in points[points["dataset"] == name].to_dict("records"):
                recall, precision = row[f"{kind} recall"], row[f"{kind} precision"]
                ax.scatter(recall, 0 if np.isnan(precision) else precision, color=colours[row["method"]],
                           marker=markers[row["point"]], s=110 if row["point"] == "LOSO" else 50, edgecolor="k",
                           lw=0.5, alpha=0.85)
            ax.set_xlim(-0.02, 1.02), ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("recall"), ax.set_ylabel("precision")
            ax.set_title(f"{name}: {kind} ({title})", fontsize=10)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colour, label=m) for m, colour in colours.items()]
    handles += [plt.Line2D([], [], ls="", marker=mk, color="0.4", label=p) for p, mk in markers.items()]
    axes[0, 1].legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.show()


def plot_per_subject(grids: Mapping[str, pd.DataFrame], path: Path) -> None:
    """A heat map per dataset of ``grids`` (name -> :func:`per_subject_f1` table): overall F1 per method and
    left-out subject, the value written in each defined cell. Saved to ``path`` and shown."""
    n_models = max(len(grid) for grid in grids.values())
    fig, axes = plt.subplots(1, len(grids), figsize=(5.5 * len(grids), 0.45 * n_models + 1.6), squeeze=False)
    for ax, (name, grid) in zip(axes[0], grids.items()):
        values = grid.to_numpy(float)
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=max(0.05, np.nanmax(values, initial=0)), aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90, fontsize=7)
        ax.set_yticks(range(len(grid)), grid.index, fontsize=8)
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if value < 0.5 * image.get_clim()[1] else "k")
        ax.set_title(f"{name}: overall F1 per left-out subject", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.show()


def plot_times(timing: pd.DataFrame, colours: Mapping[str, tuple], path: Path) -> None:
    """Two bar charts, one bar per row of ``timing`` (method, dataset): LOSO seconds and warm inference speed
    in video frames per second, both on log scales. Saved to ``path`` and shown."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(timing) + 1.5))
    labels = [f"{row.method} ({row.dataset})" for row in timing.itertuples()]
    bar_colours = [colours[m] for m in timing["method"]]
    axes[0].barh(labels, timing["LOSO seconds"], color=bar_colours)
    axes[0].set_xscale("log"), axes[0].set_xlabel("LOSO seconds (sum over folds)")
    axes[1].barh(labels, timing["frames / s"], color=bar_colours)
    axes[1].set_xscale("log"), axes[1].set_xlabel("inference: video frames per second (warm)")
    axes[1].set_yticklabels([])
    for ax in axes:
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.show()
