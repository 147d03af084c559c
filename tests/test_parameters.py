"""Notebook parameters are checked in the cell after the ``parameters`` cell: one line naming the parameter."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from mecore.parameters import ParameterError, check_parameters

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_wrong_values_are_named():
    with pytest.raises(ParameterError, match=r"parameter models = \['bifpn_i3d', 'nosuch'\]: 'nosuch': choose one of"):
        check_parameters(models=["bifpn_i3d", "nosuch"])
    with pytest.raises(ParameterError, match=r"parameter methods = \['lbp', 'mdmd'\]: 'lbp': choose one of lbp_chi2, mdmd"):
        check_parameters(methods=["lbp", "mdmd"])
    with pytest.raises(ParameterError, match=r"parameter t_eval = 0: must be a number in \(0, 1\]"):
        check_parameters(t_eval=0)
    with pytest.raises(ParameterError, match=r"parameter dataset = 'synth_casme': choose one of"):
        check_parameters(dataset="synth_casme")
    with pytest.raises(ParameterError, match=r"parameter ablations = \['no LCN', 'no lcn'\]: 'no lcn'"):
        check_parameters(ablations=["no LCN", "no lcn"], choices={"ablations": ["no LCN", "no dropout"]})
    with pytest.raises(ParameterError, match="scheduler"):
        check_parameters(scheduler="127.0.0.1:8786")
    with pytest.raises(TypeError, match="no rule for 'colour'"):
        check_parameters(colour="red")
    check_parameters(profile="smoke", models=["mdmd"], t_eval=0.5, seed=0, scheduler=None, root=None, repeats=None)


def test_every_notebook_checks_its_parameters_right_after_them():
    """Every name the parameters cell sets reaches check_parameters in the next cell (profile-dependent flags
    aside), so no parameter is silently ignored."""
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", []), path.name
        names = [line.split("=")[0].strip() for line in "".join(code[0]["source"]).splitlines()
                 if "=" in line and not line.startswith((" ", "#", "import"))]
        check = "".join(code[1]["source"])
        assert "check_parameters(" in check, path.name
        unchecked = [n for n in names if f"{n}=" not in check and f"{n})" not in check and f"{n}," not in check]
        # a mapping of display labels (01) and the paper's p per dataset family (04) need no rule
        assert unchecked == {"01": ["spotting_pair"], "04": ["general_p"]}.get(path.name[:2], []), \
            (path.name, unchecked)


def test_model_chapters_take_configuration_overrides():
    """The model chapters (10-14) have an ``overrides`` parameter, checked by check_overrides against the chapter's
    models, and every read of the model's configuration for the profile applies it; the chapters that run several
    models (20, 30) have none."""
    models = {"10": ["mesnet_cpn", "mesnet_crn"], "11": ["yap3dcnn"], "12": ["bifpn_i3d"], "13": ["stsnet_sw"],
              "14": ["fr", "fr_basic_inception", "fr_dual_inception", "fr_fc", "fr_concatenated"]}
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        has_parameter = re.search(r"^overrides = \{\}  # ", code[0], re.MULTILINE) is not None
        assert has_parameter == (path.name[:2] in models), path.name
        if not has_parameter:
            assert "overrides" not in "".join(code), path.name
            continue
        check = "overrides = check_overrides(overrides, [" + ", ".join(f'"{m}"' for m in models[path.name[:2]]) + "])"
        assert check in code[1], (path.name, check)
        reads = re.findall(r"\.config\(profile\b[^)]*\)", "".join(code[2:]))
        assert reads and all(read.endswith(", overrides)") for read in reads), (path.name, reads)


def test_check_overrides_names_the_wrong_key():
    from mecore.parameters import check_overrides

    assert check_overrides({}, ["bifpn_i3d"]) == {} and check_overrides(None, ["bifpn_i3d"]) == {}
    assert check_overrides({"train.epochs": 2}, ["mesnet_cpn", "mesnet_crn"]) == {"train.epochs": 2}
    with pytest.raises(ParameterError, match="parameter overrides, model mesnet_cpn: .*'train.lr'"):
        check_overrides({"train.lr": 3e-4}, ["mesnet_cpn", "mesnet_crn"])  # MESNet has no learning rate entry
    with pytest.raises(ParameterError, match="parameter overrides, model yap3dcnn: .*train.lrr"):
        check_overrides({"train.lrr": 3e-4}, ["yap3dcnn"])
    with pytest.raises(ParameterError, match="must be a dict"):
        check_overrides([("train.lr", 3e-4)], ["yap3dcnn"])


def test_notebook_20_refuses_an_unknown_model_before_any_work(tmp_path):
    import papermill

    started = time.perf_counter()
    with pytest.raises(papermill.PapermillExecutionError, match="parameter models = .*'nosuch'"):
        papermill.execute_notebook(str(NOTEBOOKS / "20_threshold_sweeps.ipynb"), str(tmp_path / "20.ipynb"),
                                   parameters={"profile": "smoke", "models": ["mdmd", "nosuch"]}, progress_bar=False,
                                   kernel_name="python3")
    assert time.perf_counter() - started < 120
