"""The project's contract: pins agree, CI runs the README's test command, the CLI explains itself."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mecore.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_and_pyproject_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["test"]
    conda = re.findall(r"^\s+- ([A-Za-z0-9_.\[\]-]+==[^\s#]+)", (ROOT / "environment.yml").read_text(), re.M)
    assert sorted(pins) == sorted(conda)
    assert all("==" in pin for pin in pins)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make run" in readme
    assert re.search(r"^make test$", ci, re.M)


def test_cli_help_explains_itself():
    out = subprocess.run([sys.executable, "-m", "mecore", "--help"], capture_output=True, text=True, check=True).stdout
    assert "data generate" in out and "notebooks" in out
    out = subprocess.run([sys.executable, "-m", "mecore", "data", "check", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--annotations-only" in out and "synth_casme_sq" in out


def test_data_check_reports_and_fails_clearly(smoke_root, capsys, tmp_path):
    assert main(["data", "check", "--dataset", "synth_casme_sq", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "Move-to-neutral" in out and "rows had offset 0" in out
    assert main(["data", "check", "--dataset", "casme_sq", "--root", str(tmp_path)]) == 2
    assert "no CAS(ME)^2 annotation workbook found" in capsys.readouterr().err


def test_notebooks_have_no_outputs_and_a_parameters_cell():
    import json

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path.name
        assert "parameters" in code[0]["metadata"].get("tags", []), f"{path.name}: first code cell not tagged"
