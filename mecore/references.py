"""The papers' published numbers, each with its table and dataset, printed beside ours by the notebooks.

They are references measured on the real, licensed datasets; nothing in mecore computes or asserts them.
Keys are dataset families (:func:`mecore.data.model.dataset_family`): ``casme_sq`` (CAS(ME)^2) and ``samm_lv``
(the papers' "SAMM" long videos; MESNet's Tables III-V print it as "SAMP").
"""
from __future__ import annotations

import pandas as pd

# MESNet (Wang et al. 2021), Table III: backbone validation of one left-out subject (33rd of CAS(ME)^2, 20th of
# SAMM); "average" over 10,000 initialisations (CAS(ME)^2: of the good ones, "A"), "select" the chosen one.
MESNET_TABLE_III = {
    "casme_sq": {"average": {"total clips": 48, "ME clips": 18, "T": 37, "TP": 10, "loss": 1.72, "accuracy": 0.7731},
                 "select": {"total clips": 48, "ME clips": 18, "T": 44, "TP": 16, "loss": 1.09, "accuracy": 0.9167}},
    "samm_lv": {"average": {"total clips": 88, "ME clips": 44, "T": 81, "TP": 35, "loss": 1.28, "accuracy": 0.9171},
                "select": {"total clips": 88, "ME clips": 44, "T": 86, "TP": 43, "loss": 0.80, "accuracy": 0.9773}},
}
_TABLE_IV_ROWS = ["MEs", "Prediction", "TP", "Find", "Recall", "Precision", "F1-score"]
# MESNet Table IV: spotting results of CPN and CRN (T_eval 0.5, MESNet's metric).
MESNET_TABLE_IV = {
    "casme_sq": {"CPN": [57, 2799, 22, 18, 0.32, 0.008, 0.015], "CRN": [57, 893, 12, 10, 0.18, 0.013, 0.026]},
    "samm_lv": {"CPN": [159, 3861, 54, 52, 0.33, 0.014, 0.027], "CRN": [159, 1336, 37, 36, 0.23, 0.028, 0.049]},
}
_TABLE_V_ROWS = ["CPN Find", "CPN F1-score", "CRN Find", "CRN F1-score"]
# MESNet Table V: without / with the pre-trained 2+1D backbone.
MESNET_TABLE_V = {
    "casme_sq": {"without": [4, 0.013, 0, 0.0], "with": [18, 0.015, 10, 0.026]},
    "samm_lv": {"without": [15, 0.014, 4, 0.018], "with": [52, 0.027, 36, 0.050]},
}
_TABLE_VI_ROWS = ["CPN Prediction", "CPN Find", "CPN F1-score", "CRN Prediction", "CRN Find", "CRN F1-score"]
# MESNet Table VI: CRN sharing the backbone's temporal parameters or not.
MESNET_TABLE_VI = {
    "casme_sq": {"share": [2376, 16, 0.015, 772, 6, 0.014], "not share": [2799, 18, 0.015, 871, 10, 0.026]},
    "samm_lv": {"share": [3782, 50, 0.025, 2149, 35, 0.034], "not share": [3848, 52, 0.027, 1318, 36, 0.050]},
}


def mesnet_table(number: str, family: str) -> pd.DataFrame:
    """MESNet's Table ``number`` ("III" to "VI") for ``family``, columns prefixed "paper "."""
    tables = {"III": (MESNET_TABLE_III, None), "IV": (MESNET_TABLE_IV, _TABLE_IV_ROWS),
              "V": (MESNET_TABLE_V, _TABLE_V_ROWS), "VI": (MESNET_TABLE_VI, _TABLE_VI_ROWS)}
    if number not in tables:
        raise KeyError(f"MESNet table {number!r}: choose one of {', '.join(tables)}")
    values, rows = tables[number]
    if family not in values:
        raise KeyError(f"MESNet Table {number} has no {family!r} column; it reports {', '.join(values)}")
    table = pd.DataFrame(values[family]) if rows is None else pd.DataFrame(values[family], index=rows)
    return table.add_prefix("paper ")
