"""Where `make run`'s time goes: run_loso's timing lines, the per-notebook and per-run tables, papermill's kernels."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd

import mecore.__main__ as cli
from mecore.__main__ import format_timings, read_timing_lines, save_timings, timing_tables
from mecore.loso import TIMINGS_ENV, fold_file, run_loso

# a recognition model that trains nothing: two subjects, four clips each, always predicts the commonest label
TINY_MODEL = '''
from pathlib import Path

import pandas as pd

from mecore.config import Config
from mecore.data.dataset import Dataset, annotation_frame
from mecore.models import ModelSpec


def commonest(fold):
    label = fold.train_rows["emotion"].mode().iloc[0]
    test = fold.test_rows
    return pd.DataFrame({"video": test["video"].to_numpy(), "label": test["emotion"].to_numpy(),
                         "prediction": label})


SPEC = ModelSpec(name="test-commonest", task="recognition", paper="test model", run_fold=commonest,
                 configs={"smoke": Config({"input": {"max_fps": None}, "train": {}, "test": {},
                                           "trial": {"max_steps": None}, "run": {"repeats": 1}})})
ROWS = [{"dataset": "fake_casme2", "subject": f"s{s}", "video": f"s{s}_c{c}", "onset": 1, "apex": 5, "offset": 10,
         "type": "micro", "emotion": ["happiness", "surprise"][c % 2], "fps": 200.0} for s in range(2) for c in range(4)]
DATA = Dataset("fake_casme2", Path("/nonexistent"), annotation_frame(ROWS), videos={}, kind="recognition")
'''


def tiny(tmp_path: Path):
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(compile(TINY_MODEL, str(tmp_path / "tiny_model.py"), "exec"), namespace)
    return namespace["SPEC"], namespace["DATA"]


def line(model, seconds, status, folds=4, computed=None, folder=None):
    computed = {"computed": folds, "reused": 0, "resumed": 1}[status] if computed is None else computed
    return {"model": model, "dataset": "synth_casme_sq", "profile": "default", "key": "k" + model,
            "folder": folder or f"/home/x/runs/loso/{model}/synth_casme_sq/default-k{model}", "seconds": seconds,
            "folds": folds, "folds_computed": computed, "status": status}


def test_tables_attribute_runs_to_notebooks_longest_first(tmp_path):
    notebooks = [{"notebook": "00_setup.ipynb", "seconds": 4.0, "status": "ok"},
                 {"notebook": "10_mesnet.ipynb", "seconds": 300.0, "status": "ok"},
                 {"notebook": "30_comparison.ipynb", "seconds": 96.0, "status": "failed"}]
    runs = {"00_setup.ipynb": [],
            "10_mesnet.ipynb": [line("mesnet_cpn", 120.0, "computed"), line("mesnet_crn", 150.5, "resumed")],
            "30_comparison.ipynb": [line("mdmd", 2.0, "reused"), line("mesnet_crn", 1.5, "reused")]}
    table, loso = timing_tables(notebooks, runs)
    assert table["notebook"].tolist() == ["00_setup.ipynb", "10_mesnet.ipynb", "30_comparison.ipynb"]
    assert table["loso_runs"].tolist() == [0, 2, 2]
    assert table["computed"].tolist() == [0, 2, 0] and table["reused"].tolist() == [0, 0, 2]
    assert table["loso_seconds"].tolist() == [0.0, 270.5, 3.5]
    assert abs(table["share"].sum() - 1.0) < 0.01 and table["share"].iloc[1] == 0.75
    assert loso["seconds"].tolist() == [150.5, 120.0, 2.0, 1.5]
    assert loso.loc[0, "run"] == "mesnet_crn/synth_casme_sq/default-kmesnet_crn"
    assert loso.loc[0, ["notebook", "status", "folds", "folds_computed"]].tolist() == [
        "10_mesnet.ipynb", "resumed", 4, 1]

    text = format_timings(table, loso, "default", wall=400.0)
    assert "0:06:40" in text and "| 10_mesnet.ipynb | 300.0 | ok | 2 | 2 | 0 | 270.5 | 75% |" in text
    save_timings(tmp_path, table, loso, text)
    assert (tmp_path / "timings.md").read_text() == text
    saved = pd.read_csv(tmp_path / "timings.csv")
    assert saved["kind"].tolist() == ["notebook"] * 3 + ["loso"] * 4
    assert saved.loc[saved["kind"] == "loso", "model"].tolist() == ["mesnet_crn", "mesnet_cpn", "mdmd", "mesnet_crn"]
    assert "4.0" not in (tmp_path / "timings.csv").read_text().split("\n")[4]  # folds written as integers

    empty_table, empty_loso = timing_tables(notebooks[:1], {"00_setup.ipynb": []})
    assert len(empty_loso) == 0 and "(none)" in format_timings(empty_table, empty_loso, "smoke")


def test_timing_lines_cut_short_are_skipped(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_text(json.dumps(line("mdmd", 1.0, "reused")) + "\n" + '{"model": "mesn')
    assert [entry["model"] for entry in read_timing_lines(path)] == ["mdmd"]
    assert read_timing_lines(tmp_path / "absent.jsonl") == []


def test_run_loso_appends_one_line_per_call_when_asked(tmp_path, monkeypatch):
    spec, data = tiny(tmp_path)
    options = dict(scheduler="sync", results_dir=tmp_path / "runs", progress=False)
    monkeypatch.delenv(TIMINGS_ENV, raising=False)
    run_loso(spec, data, "smoke", **options, seed=1)
    target = tmp_path / "timings.jsonl"
    monkeypatch.setenv(TIMINGS_ENV, str(target))
    first = run_loso(spec, data, "smoke", **options)
    again = run_loso(spec, data, "smoke", **options)
    fold_file(first.folder, "s1").unlink()
    resumed = run_loso(spec, data, "smoke", **options)
    lines = read_timing_lines(target)
    assert [entry["status"] for entry in lines] == ["computed", "reused", "resumed"]
    assert [entry["folds_computed"] for entry in lines] == [2, 0, 1] and {e["folds"] for e in lines} == {2}
    assert lines[0]["folder"] == str(first.folder) == str(again.folder) == str(resumed.folder)
    assert lines[0]["model"] == "test-commonest" and lines[0]["profile"] == "smoke" and lines[0]["key"] == first.key
    assert all(entry["seconds"] >= 0 for entry in lines)


def test_run_notebooks_times_each_notebook_and_its_loso_runs(tmp_path, monkeypatch, capsys):
    """A real papermill kernel: it inherits $MECORE_TIMINGS, so its run_loso lines land under its notebook."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    tiny(folder)
    code = ("from mecore.loso import run_loso\nfrom tiny_model import SPEC, DATA\n"
            "run_loso(SPEC, DATA, profile, scheduler='sync', results_dir=results, progress=False)")
    for name, body in (("00_plain.ipynb", "x = 1"), ("01_loso.ipynb", code)):
        notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                     "display_name": "Python 3"}})
        parameters = nbformat.v4.new_code_cell(f"profile = 'smoke'\nresults = {str(tmp_path / 'loso')!r}")
        parameters.metadata["tags"] = ["parameters"]
        notebook.cells = [parameters, nbformat.v4.new_code_cell(body)]
        nbformat.write(notebook, folder / name)
    monkeypatch.setattr(cli, "NOTEBOOKS", folder)
    monkeypatch.setenv("MECORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(TIMINGS_ENV, raising=False)

    out_dir = cli.run_notebooks("smoke")
    printed = capsys.readouterr().out
    assert "[1/2] 00_plain.ipynb" in printed and "[2/2] 01_loso.ipynb" in printed and "elapsed" in printed
    assert "Where the time went" in printed and "test-commonest" in printed
    saved = pd.read_csv(out_dir / "timings.csv")
    notebooks = saved[saved["kind"] == "notebook"].set_index("notebook")
    assert notebooks["loso_runs"].to_dict() == {"00_plain.ipynb": 0, "01_loso.ipynb": 1}
    assert (notebooks["status"] == "ok").all() and (notebooks["seconds"] > 0).all()
    run = saved[saved["kind"] == "loso"].iloc[0]
    assert (run["notebook"], run["model"], run["status"], run["folds_computed"]) == (
        "01_loso.ipynb", "test-commonest", "computed", 2)
    assert (out_dir / "timings.md").exists() and TIMINGS_ENV not in __import__("os").environ
