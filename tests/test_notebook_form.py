"""The notebooks' stored form: canonical, idempotent, and what JupyterLab's autosave adds is cleaned away."""
from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from mecore import notebook_form
from mecore.notebook_form import clean, default_paths, differences

ROOT = Path(__file__).resolve().parents[1]
STORED = default_paths()
COMMAND = "python -m mecore.notebook_form --write"

# metadata.language_info as JupyterLab copies it from ipykernel's kernel_info_reply (recorded with jupyter_client
# from this venv's kernel; the version is the interpreter's, so it changes from machine to machine)
LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3", "version": "3.11.7"}
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def saved_by_jupyterlab(text: str, language_info: dict | None = None) -> dict:
    """The notebook in ``text`` as JupyterLab 4.6 sends it to the server after a user ran it and looked around:
    language_info, outputs and counts, a figure, view state, timing metadata, widget state, jupytext keys."""
    notebook = json.loads(text)
    notebook["metadata"]["language_info"] = language_info or LANGUAGE_INFO
    notebook["metadata"]["jupytext"] = {"cell_metadata_filter": "tags,-all", "formats": "ipynb"}
    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {"a1b2": {"model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0",
                           "model_name": "IntSliderModel", "state": {"value": 3}}},
        "version_major": 2, "version_minor": 0}}
    notebook["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    count = 0
    for cell in notebook["cells"]:
        cell["metadata"]["trusted"] = True
        if cell["cell_type"] != "code":
            cell["metadata"]["jp-MarkdownHeadingCollapsed"] = True
            continue
        count += 1
        cell["execution_count"] = count
        cell["metadata"].update({"scrolled": True, "collapsed": False, "lines_to_next_cell": 2,
                                 "jupyter": {"outputs_hidden": False, "source_hidden": False},
                                 "execution": {"iopub.execute_input": "2026-01-01T00:00:00.000Z",
                                               "shell.execute_reply": "2026-01-01T00:00:01.000Z"}})
        cell["outputs"] = [
            {"name": "stdout", "output_type": "stream", "text": ["done\n"]},
            {"data": {"image/png": PNG, "text/plain": ["<Figure size 640x480 with 1 Axes>"]},
             "metadata": {}, "output_type": "display_data"},
            {"data": {"text/plain": ["42"]}, "execution_count": count, "metadata": {},
             "output_type": "execute_result"}]
    return notebook


def editor_text(notebook: dict) -> str:
    """How the server writes what the editor sent (nbformat.writes + newline)."""
    return nbformat.writes(nbformat.from_dict(notebook)) + "\n"


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_every_stored_notebook_is_in_canonical_form(path):
    found = differences(path.read_text(encoding="utf-8"))  # empty exactly when clean(text) == text
    assert not found, f"{path.name} is not in the canonical stored form ({'; '.join(found)}); run: {COMMAND}"


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_a_notebook_saved_by_jupyterlab_cleans_back_to_the_stored_form(path):
    stored = clean(path.read_text(encoding="utf-8"))  # == the file's bytes (the test above)
    saved = editor_text(saved_by_jupyterlab(stored))
    assert saved != stored
    assert clean(saved) == stored
    assert clean(clean(saved)) == clean(saved)


def test_clean_is_idempotent_and_keeps_tags_sources_ids_and_attachments():
    source = "x = 1  # π ≈ 3.14159, emoji 🙂\n\n\ny = 'trailing spaces'   \n"
    notebook = {
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {"tags": ["keep"]}, "source": ["# Title\n", "text"],
             "attachments": {"a.png": {"image/png": PNG}}},
            {"cell_type": "code", "id": "params", "metadata": {"tags": ["parameters"], "scrolled": True},
             "execution_count": 7, "outputs": [{"name": "stdout", "output_type": "stream", "text": "hi\n"}],
             "source": source},
            {"cell_type": "raw", "id": "raw-1", "metadata": {"raw_mimetype": "text/latex"}, "source": "$x$"},
        ],
        "metadata": {"language_info": LANGUAGE_INFO, "kernelspec": notebook_form.KERNELSPEC},
        "nbformat": 4, "nbformat_minor": 5}
    once = clean(json.dumps(notebook, indent=4))
    assert clean(once) == once and once.endswith("}\n") and not once.endswith("\n\n")
    parsed = json.loads(once)
    nbformat.validate(nbformat.from_dict(parsed))
    markdown, code, raw = parsed["cells"]
    assert [c["id"] for c in parsed["cells"]] == ["intro", "params", "raw-1"]
    assert markdown["metadata"] == {"tags": ["keep"]} and markdown["attachments"] == {"a.png": {"image/png": PNG}}
    assert code["metadata"] == {"tags": ["parameters"]} and code["outputs"] == [] and code["execution_count"] is None
    assert "".join(code["source"]) == source and "π ≈" in once  # non-ASCII kept as is (ensure_ascii=False)
    assert raw["metadata"] == {"raw_mimetype": "text/latex"}
    assert parsed["metadata"] == {"kernelspec": notebook_form.KERNELSPEC}
    assert once.startswith('{\n "cells": [\n  {\n   "attachments"')  # indent 1, sorted keys


def test_missing_and_duplicate_ids_get_deterministic_ones_and_old_minor_versions_are_upgraded():
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "source": "a", "execution_count": None,
                           "outputs": []},
                          {"cell_type": "code", "metadata": {}, "source": "a", "execution_count": None,
                           "outputs": []},
                          {"cell_type": "markdown", "id": "same", "metadata": {}, "source": "m"},
                          {"cell_type": "markdown", "id": "same", "metadata": {}, "source": "n"},
                          {"cell_type": "markdown", "id": "bad id!", "metadata": {}, "source": "o"}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    first, second = clean(json.dumps(notebook)), clean(json.dumps(copy.deepcopy(notebook)))
    assert first == second
    ids = [c["id"] for c in json.loads(first)["cells"]]
    assert len(set(ids)) == 5 and ids[2] == "same"
    assert json.loads(first)["nbformat_minor"] == 5
    nbformat.validate(nbformat.reads(first, as_version=4))
    assert differences(json.dumps(notebook))  # names what it changes
    with pytest.raises(notebook_form.NotebookFormError):
        clean("<<<<<<< HEAD\n{")


def run_module(*args, stdin: bytes | None = None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "mecore.notebook_form", *args], input=stdin, cwd=cwd,
                          capture_output=True, timeout=60)


def test_command_line_check_write_and_filter(tmp_path, capsys):
    stored = clean(STORED[0].read_text(encoding="utf-8"))
    saved = editor_text(saved_by_jupyterlab(stored))
    path = tmp_path / "nb.ipynb"
    path.write_text(saved, encoding="utf-8")
    assert notebook_form.main(["--check", str(path)]) == 1
    captured = capsys.readouterr()
    assert "outputs in" in captured.out and "language_info" in captured.out and "--write" in captured.err
    filtered = run_module("--filter", stdin=saved.encode())  # as git runs it
    assert filtered.returncode == 0 and filtered.stdout.decode() == stored
    conflict = b"<<<<<<< HEAD\nnot json\n"
    assert run_module("--filter", stdin=conflict).stdout == conflict  # passed through, never lost
    assert notebook_form.main(["--write", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == stored
    assert notebook_form.main(["--check", str(path)]) == 0


def test_gitattributes_apply_the_filter_and_git_stores_the_clean_form(tmp_path):
    assert "notebooks/*.ipynb filter=mecore-notebook" in (ROOT / ".gitattributes").read_text()
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    stored = clean(STORED[0].read_text(encoding="utf-8"))
    (repo / "notebooks" / "x.ipynb").write_text(editor_text(saved_by_jupyterlab(stored)), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    git = ["git", "-c", f"filter.mecore-notebook.clean={sys.executable} -m mecore.notebook_form --filter"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([*git, "add", "."], cwd=repo, check=True, env=env)
    blob = subprocess.run(["git", "show", ":notebooks/x.ipynb"], cwd=repo, check=True, env=env,
                          capture_output=True).stdout.decode()
    assert blob == stored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_language_info() -> dict:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=30)
    try:
        return client.kernel_info(reply=True, timeout=30)["content"]["language_info"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_a_real_jupyter_server_save_round_trips_through_the_filter(tmp_path):
    """jupyter_server (with this venv's extensions: jupytext's contents manager) writes the canonical form of an
    unexecuted notebook byte for byte; what the frontend adds on save is cleaned back to it."""
    root = tmp_path / "root"
    root.mkdir()
    stored = clean(STORED[0].read_text(encoding="utf-8"))
    (root / "nb.ipynb").write_text(stored, encoding="utf-8")
    token, port = "mecore-test", _free_port()
    env = {**os.environ, **{f"JUPYTER_{d}_DIR": str(tmp_path / d.lower()) for d in ("CONFIG", "RUNTIME", "DATA")}}
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                               "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={root}"], env=env, stdout=log, stderr=subprocess.STDOUT)

    def contents(method: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/contents/nb.ipynb" + ("?content=1" if method == "GET" else ""),
            method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.load(response)

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                model = contents("GET")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"jupyter_server did not start: {(tmp_path / 'server.log').read_text()[-500:]}")
                time.sleep(0.2)
        contents("PUT", {"type": "notebook", "format": "json", "content": model["content"]})
        assert (root / "nb.ipynb").read_text(encoding="utf-8") == stored  # the server writes the canonical form
        edited = saved_by_jupyterlab(stored, _kernel_language_info())
        contents("PUT", {"type": "notebook", "format": "json", "content": edited})
        written = (root / "nb.ipynb").read_text(encoding="utf-8")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert written != stored and '"language_info"' in written and '"image/png"' in written
    assert run_module("--filter", stdin=written.encode()).stdout.decode() == stored
