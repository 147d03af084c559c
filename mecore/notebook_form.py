"""The one form in which the notebooks are stored, and the git clean filter that keeps them in it.

Opening a notebook in JupyterLab dirties the repository within minutes: its autosave writes what the editor
holds, not what was committed. Measured with JupyterLab 4.6 / jupyter_server 2.21 / jupytext 1.19 (a notebook
fetched through the contents API, given what the frontend adds, PUT back; ``tests/test_notebook_form.py``
repeats it): the server writes ``nbformat.writes`` JSON (indent 1, sorted keys, non-ASCII kept, one trailing
newline) and keeps whatever metadata it is sent; the frontend sends

* ``metadata.language_info`` from the kernel's ``kernel_info_reply`` (with the Python version, e.g. 3.11.7),
  and a ``kernelspec`` of whichever kernel was chosen;
* every executed code cell's ``outputs`` and ``execution_count`` (figures as base64 PNG);
* cell ids (nbformat 4.5; a notebook of an older minor version is upgraded and given random ids);
* cell view state when touched: ``collapsed``, ``scrolled``, ``jupyter.source_hidden`` /
  ``outputs_hidden``, and ``execution`` timings when "record timing" is on;
* ``metadata.widgets`` (ipywidgets state) when the widget manager saves state;
* and jupytext keys stay wherever a conversion put them (``metadata.jupytext``, ``lines_to_next_cell``);
  nbformat drops the ``signature`` and per-cell ``trusted`` flags itself.

:func:`clean` maps any of these to one canonical text, equal to what jupyter_server writes for the unexecuted
notebook: outputs emptied, ``execution_count`` null, notebook metadata reduced to the standard python3
``kernelspec``, cell metadata reduced to ``tags`` (the papermill ``parameters`` tag, nbval tags) and, for raw
cells, their format; markdown attachments and every source kept byte for byte; cell ids kept (nbformat 4.5
requires them), a missing, invalid or duplicate id replaced by a deterministic one (a hash of the cell's
source); ``nbformat`` 4, ``nbformat_minor`` 5. It is idempotent.

Command line::

    python -m mecore.notebook_form [--check]  [paths...]   # exit 1 naming what differs (default: notebooks/*.ipynb)
    python -m mecore.notebook_form --write    [paths...]   # rewrite the files in the canonical form
    python -m mecore.notebook_form --filter                # stdin -> stdout: the git clean filter

``make install`` registers the filter (``git config filter.mecore-notebook.clean``) and ``.gitattributes``
applies it to ``notebooks/*.ipynb``: git then stores and diffs the canonical form while the working copy keeps
its outputs, so an editor's autosave no longer shows as a change.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

from mecore.paths import write_atomically

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
NBFORMAT, NBFORMAT_MINOR = 4, 5
CELL_METADATA_KEPT = {"code": ("tags",), "markdown": ("tags",), "raw": ("tags", "format", "raw_mimetype")}
CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # nbformat 4.5's schema


class NotebookFormError(ValueError):
    """The text is not a notebook (not JSON, not an nbformat-4 structure)."""


def clean(text: str) -> str:
    """The canonical stored form of the notebook ``text`` (see the module docstring)."""
    return dumps(canonical(loads(text)))


def loads(text: str) -> dict:
    """The notebook in ``text`` as a plain dict of nbformat 4 (older major versions are converted)."""
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as error:
        raise NotebookFormError(f"not JSON ({error})") from None
    if not isinstance(notebook, dict) or "cells" not in notebook and "worksheets" not in notebook:
        raise NotebookFormError("not a notebook: no 'cells'")
    if notebook.get("nbformat", NBFORMAT) < NBFORMAT:
        import nbformat

        converted = json.loads(nbformat.writes(nbformat.reads(text, as_version=NBFORMAT)))
        for cell in converted["cells"]:
            cell.pop("id", None)  # random ids of the upgrade: give deterministic ones instead
        notebook = converted
    return notebook


def canonical(notebook: dict) -> dict:
    """The canonical notebook structure (sources as strings); ``notebook`` is not modified."""
    cells, seen = [], set()
    for index, cell in enumerate(notebook.get("cells", [])):
        kind = cell.get("cell_type", "code")
        source = _text(cell.get("source", ""))
        out = {"cell_type": kind, "id": _cell_id(cell.get("id"), kind, source, index, seen),
               "metadata": _cell_metadata(cell.get("metadata") or {}, kind), "source": source}
        if kind == "code":
            out["execution_count"] = None
            out["outputs"] = []
        elif cell.get("attachments"):
            out["attachments"] = copy.deepcopy(cell["attachments"])
        cells.append(out)
    return {"cells": cells, "metadata": {"kernelspec": dict(KERNELSPEC)}, "nbformat": NBFORMAT,
            "nbformat_minor": NBFORMAT_MINOR}


def dumps(notebook: dict) -> str:
    """``notebook`` as jupyter_server writes it: ``nbformat.writes`` (indent 1, sorted keys, ``ensure_ascii=False``,
    multi-line strings split into lists) and one trailing newline (``nbformat.write``)."""
    import nbformat
    from nbformat.v4 import writes_json

    text = writes_json(nbformat.from_dict(copy.deepcopy(notebook)))
    return text if text.endswith("\n") else text + "\n"


def differences(text: str) -> list[str]:
    """What :func:`clean` would change in ``text``, in a few words each (empty if it is canonical)."""
    if clean(text) == text:
        return []
    notebook = loads(text)
    found = []
    cells = notebook.get("cells", [])
    counted = {
        "outputs": sum(bool(c.get("outputs")) for c in cells),
        "execution counts": sum(c.get("execution_count") is not None for c in cells if c.get("cell_type") == "code"),
        "cell ids missing or invalid": sum(not CELL_ID.match(str(c.get("id", ""))) for c in cells),
    }
    found += [f"{what} in {n} cells" for what, n in counted.items() if n]
    extra = sorted({key for c in cells for key in (c.get("metadata") or {})
                    if key not in CELL_METADATA_KEPT.get(c.get("cell_type"), ())})
    if extra:
        found.append("cell metadata " + ", ".join(extra))
    metadata = notebook.get("metadata") or {}
    extra = sorted(key for key in metadata if key != "kernelspec")
    if extra:
        found.append("notebook metadata " + ", ".join(extra))
    if metadata.get("kernelspec") != KERNELSPEC:
        found.append(f"kernelspec {metadata.get('kernelspec')}")
    if (notebook.get("nbformat"), notebook.get("nbformat_minor")) != (NBFORMAT, NBFORMAT_MINOR):
        found.append(f"nbformat {notebook.get('nbformat')}.{notebook.get('nbformat_minor')}")
    if not found:
        found.append("layout (indentation, key order or line splitting)")
    return found


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else str(source)


def _cell_id(given, kind: str, source: str, index: int, seen: set) -> str:
    if isinstance(given, str) and CELL_ID.match(given) and given not in seen:
        seen.add(given)
        return given
    salt = 0
    while True:
        candidate = hashlib.sha1(f"{kind}\0{source}\0{salt}".encode()).hexdigest()[:8]
        if candidate not in seen:
            seen.add(candidate)
            return candidate
        salt += 1


def _cell_metadata(metadata: dict, kind: str) -> dict:
    kept = {}
    for key in CELL_METADATA_KEPT.get(kind, ("tags",)):
        if key not in metadata:
            continue
        value = metadata[key]
        if key == "tags":
            if not isinstance(value, list) or not value:
                continue
            value = list(dict.fromkeys(str(tag) for tag in value))  # order kept, repeats dropped
        kept[key] = copy.deepcopy(value)
    return kept


def default_paths() -> list[Path]:
    """The notebooks ``.gitattributes`` filters: ``notebooks/*.ipynb``."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mecore.notebook_form",
        description="Check or write notebooks in their canonical stored form (no outputs, counts, "
                    "language_info, widget state or editor metadata), or act as the git clean filter.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 naming each file not in canonical form (default)")
    mode.add_argument("--write", action="store_true", help="rewrite files in canonical form")
    mode.add_argument("--filter", action="store_true", help="git clean filter: read stdin, write stdout")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)

    if args.filter:
        data = sys.stdin.buffer.read()
        try:
            out = clean(data.decode("utf-8")).encode("utf-8")
        except Exception as error:  # e.g. merge conflict markers: store the file as it is rather than fail git
            print(f"mecore.notebook_form: left unchanged, {error}", file=sys.stderr)
            out = data
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
        return 0

    paths = args.paths or default_paths()
    bad = 0
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            cleaned = clean(text)
        except (OSError, UnicodeDecodeError, NotebookFormError) as error:
            print(f"{path}: error: {error}", file=sys.stderr)
            bad += 1
            continue
        if cleaned == text:
            continue
        if args.write:
            write_atomically(path, cleaned.encode("utf-8"))  # an interrupted rewrite leaves the old file
            print(f"{path}: rewritten ({'; '.join(differences(text))})")
        else:
            print(f"{path}: not canonical: {'; '.join(differences(text))}")
            bad += 1
    if bad and not args.write:
        print(f"{bad} of {len(paths)} notebooks not in canonical form; run: "
              f"python -m mecore.notebook_form --write {' '.join(map(str, args.paths)) if args.paths else ''}".rstrip(),
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
