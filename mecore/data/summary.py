"""Dataset summaries: counts, duration statistics (Yap et al. Table 2), move-to-neutral ratio (Yap Sec. 3.2)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import references
from .dataset import Dataset

# Yap et al. Table 2, seconds (mecore.references): the published values, printed beside ours, never used as outputs;
# columns (dataset, type), the dataset under the paper's name.
YAP_TABLE2 = pd.concat({label: references.table("yap3dcnn", "2", family)
                        for label, family in (("SAMM-LV", "samm_lv"), ("CAS(ME)^2", "casme_sq"))}, axis=1)
# Yap et al. Sec. 3.2: average move-to-neutral ratio.
YAP_MOVE_TO_NEUTRAL = {"SAMM-LV": 0.40, "CAS(ME)^2": 0.05}


def expression_frames(annotations: pd.DataFrame) -> pd.Series:
    """Each interval's duration in frames, ``offset - onset``: the count with which Yap et al.'s Table 2 mean
    durations give their Table 3 k-th frame skips (counting ``+ 1`` would make CAS(ME)^2's MaE skip 18, not 19).
    Every duration in mecore (tables, the k-th rule) counts this way."""
    return (annotations["offset"] - annotations["onset"]).astype(float)


def durations_s(annotations: pd.DataFrame) -> pd.Series:
    """Each annotated interval's duration in seconds: :func:`expression_frames` / fps."""
    return expression_frames(annotations) / annotations["fps"]


def counts(annotations: pd.DataFrame, videos: dict | None = None) -> pd.DataFrame:
    """Expressions per subject and type, with videos per subject and a total row. Given the dataset's
    ``videos``, those are counted, videos with no expression (and their subjects) included."""
    table = pd.crosstab(annotations["subject"], annotations["type"]).reindex(columns=["micro", "macro"], fill_value=0)
    if videos:
        per_subject = pd.Series([video.subject for video in videos.values()]).value_counts()
        table = table.reindex(sorted(set(table.index) | set(per_subject.index)), fill_value=0)
        table.index.name = "subject"
        table["videos"] = per_subject.reindex(table.index, fill_value=0)
    else:
        table["videos"] = annotations.groupby("subject")["video"].nunique()
    table.loc["total"] = table.sum()
    return table


def duration_table(annotations: pd.DataFrame) -> pd.DataFrame:
    """Min / mean / max duration in seconds per expression type (the layout of Yap Table 2)."""
    seconds = durations_s(annotations)
    table = seconds.groupby(annotations["type"]).agg(["min", "mean", "max", "count"]).T
    table.index = ["min (s)", "mean (s)", "max (s)", "count"]
    return table.reindex(columns=[c for c in ("micro", "macro") if c in table.columns]).round(2)


def movement_mask(dataset: Dataset, video: str) -> np.ndarray:
    """Per-frame booleans (in the video's frame order): inside any annotated interval."""
    numbers = dataset.video(video).frame_numbers
    mask = np.zeros(len(numbers), bool)
    for row in dataset.intervals(video).itertuples():
        mask |= (numbers >= row.onset) & (numbers <= row.offset)
    return mask


def move_to_neutral(dataset: Dataset) -> pd.Series:
    """Yap et al. Sec. 3.2: per subject, frames with an annotated movement (ME or MaE, counted once
    where they overlap) divided by neutral frames, over all of the subject's videos."""
    moving, neutral = {}, {}
    for name, video in dataset.videos.items():
        mask = movement_mask(dataset, name)
        moving[video.subject] = moving.get(video.subject, 0) + int(mask.sum())
        neutral[video.subject] = neutral.get(video.subject, 0) + int((~mask).sum())
    ratio = pd.Series({s: moving[s] / max(neutral[s], 1) for s in sorted(moving)}, name="move_to_neutral")
    ratio.index.name = "subject"
    return ratio


def frame_gaps(dataset: Dataset, shown: int = 12) -> list[str]:
    """One line per video whose frame numbering has gaps (frames missing inside it), at most ``shown``."""
    lines = []
    for name, video in {**dataset.videos, **dataset.spot_videos}.items():
        gaps = video.gaps
        if gaps:
            runs = [f"{a}" if a == b else f"{a}-{b}" for a, b in gaps]
            missing = sum(b - a + 1 for a, b in gaps)
            lines.append(f"  {name} ({video.folder}): {missing} frame number{'s' if missing > 1 else ''} missing: "
                         + ", ".join(runs[:8]) + (f", and {len(runs) - 8} more runs" if len(runs) > 8 else ""))
    return lines[:shown] + ([f"  ... and {len(lines) - shown} more videos"] if len(lines) > shown else [])


def describe(dataset: Dataset, with_frames: bool = True) -> str:
    """The text report of ``python -m mecore data check``: what was read, counts, durations, frame numbering gaps
    and every repair or skip."""
    read = ", ".join(str(path) for path in dataset.sources) or f"the folder names under {dataset.root}"
    lines = [repr(dataset), f"Annotations read from: {read}", "", "Expressions per subject and type:",
             counts(dataset.annotations, dataset.videos if dataset.kind == "spotting" else None).to_string(), "",
             "Durations (offset - onset frames / fps):", duration_table(dataset.annotations).to_string()]
    if "emotion" in dataset.annotations and dataset.annotations["emotion"].notna().any():
        lines += ["", "Emotions:", dataset.annotations["emotion"].value_counts().to_string()]
    if with_frames and dataset.kind == "spotting":
        ratio = move_to_neutral(dataset)
        lines += ["", f"Move-to-neutral ratio (Yap Sec. 3.2): mean {ratio.mean():.3f} over {len(ratio)} subjects",
                  "Video lengths (s): " + ", ".join(f"{v.duration_s:.1f}" for v in list(dataset.videos.values())[:12])
                  + (" ..." if len(dataset.videos) > 12 else "")]
    if with_frames:
        gaps = frame_gaps(dataset)
        lines += ["", "Gaps in frame numbering:"] + (gaps or ["  (none)"])
    lines += ["", "Repairs and skips:"] + ([f"  - {r}" for r in dataset.repairs] or ["  (none)"])
    return "\n".join(lines)
