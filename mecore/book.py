"""The executed notebooks as a static HTML book: ``python -m mecore book --profile P`` or ``make book``.

Reads ``runs/notebooks/<profile>/`` (what ``python -m mecore notebooks`` wrote) and writes ``runs/book/<profile>/``
(git-ignored): ``index.html``, a table of contents (chapter number, the title from each notebook's first heading,
a link), and one page per notebook with its outputs, previous / contents / next links at the top and bottom, and
MathJax for the equations. Open ``index.html`` in a browser; nothing is served.

Why nbconvert: it is already installed (papermill and nbval come with it; no new dependency), it is the Jupyter
project's own, well-maintained exporter, and it reads executed notebooks directly, rendering every output type
the notebooks produce as JupyterLab shows them (the ``lab`` template): matplotlib figures are embedded as PNG
data URIs, pandas tables as HTML, LaTeX through MathJax. Its ``embed_images`` option also embeds images that
markdown cells link to by a relative path (resolved against ``notebooks/``, where papermill ran the kernels, as
the notebook's own relative links are); an image it cannot embed that exists next to the executed notebook is
copied to ``assets/``. Book builders such as Jupyter Book or Quarto would add a dependency and a configuration of
their own for what amounts to a list of pages.

Relative links in markdown are made to work from the book: a link to another notebook goes to its page, a link
to a file of the checkout (``../docs/evaluation.md``) is rewritten relative to the book's folder.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import paths

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
NAV_STYLE = ("<style>.mecore-book-nav{display:flex;justify-content:space-between;gap:1em;max-width:1100px;"
             "margin:0.8em auto;padding:0.5em 1em;font:14px/1.4 system-ui,sans-serif;border:1px solid #ddd;"
             "border-radius:4px;background:#fafafa}.mecore-book-nav a{text-decoration:none}"
             ".mecore-book-nav span{min-width:30%}</style>")


class BookError(RuntimeError):
    """No executed notebooks to build from (the message says which folder and what to run first)."""


@dataclass
class Chapter:
    source: Path
    number: str
    title: str
    page: str
    figures: int = 0  # image outputs of its code cells
    missing: list[str] = field(default_factory=list)  # image links that resolve to no file


@dataclass
class Book:
    folder: Path
    index: Path
    chapters: list[Chapter]

    @property
    def missing(self) -> list[str]:
        return [f"{c.source.name}: {m}" for c in self.chapters for m in c.missing]


def build_book(profile: str | None = None, source: str | Path | None = None, out: str | Path | None = None,
               base: str | Path | None = None) -> Book:
    """Write the book of the executed notebooks in ``source`` (default ``runs/notebooks/<profile>/``) to ``out``
    (default ``runs/book/<profile>/``). ``base``: the folder the notebooks ran in, against which their relative
    links resolve (default ``notebooks/``). Raises :class:`BookError` when ``source`` holds no notebook."""
    import nbformat
    from nbconvert import HTMLExporter

    profile = paths.profile(profile)
    source = Path(source) if source is not None else paths.runs_dir() / "notebooks" / profile
    out = Path(out) if out is not None else paths.runs_dir() / "book" / profile
    base = Path(base) if base is not None else NOTEBOOKS
    found = sorted(source.glob("*.ipynb")) if source.is_dir() else []
    if not found:
        raise BookError(f"no executed notebooks in {source}; run them first: python -m mecore notebooks "
                        f"--profile {profile} (or make run PROFILE={profile})")
    notebooks = [nbformat.read(path, as_version=4) for path in found]
    chapters = [Chapter(path, _number(path, i), _title(nb, path), f"{path.stem}.html")
                for i, (path, nb) in enumerate(zip(found, notebooks))]
    pages = {chapter.source.name: chapter.page for chapter in chapters}

    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.html")]:
        old.unlink()
    shutil.rmtree(out / "assets", ignore_errors=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    for i, (chapter, notebook) in enumerate(zip(chapters, notebooks)):
        chapter.figures = sum(1 for cell in notebook.cells if cell.cell_type == "code"
                              for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
                              or "image/jpeg" in output.get("data", {}) or "image/svg+xml" in output.get("data", {}))
        name = f"{chapter.number} · {chapter.title}" if chapter.number else chapter.title
        body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"path": str(base), "name": name}})
        body = _fix_references(body, chapter, [base, chapter.source.parent], out, pages)
        nav = _nav(chapters[i - 1] if i else None, chapters[i + 1] if i + 1 < len(chapters) else None)
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + NAV_STYLE + nav, body, count=1)
        body = body.replace("</body>", nav + "</body>", 1)
        (out / chapter.page).write_text(body, encoding="utf-8")
    index = out / "index.html"
    index.write_text(_index(chapters, profile, source), encoding="utf-8")
    return Book(out, index, chapters)


def _number(path: Path, position: int) -> str:
    match = re.match(r"(\d+)", path.name)
    return match.group(1) if match else str(position + 1)


def _title(notebook, path: Path) -> str:
    """The text of the notebook's first markdown heading, without a leading chapter number; else the file name."""
    number = re.match(r"(\d+)", path.name)
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        match = HEADING.search(cell.source)
        if match:
            title = re.sub(r"\\(.)", r"\1", re.sub(r"\*+|__|`", "", match.group(1))).strip()  # emphasis, escapes
            if number:
                title = re.sub(rf"^{number.group(1)}\s*[·.:\-–—]?\s*", "", title) or title
            return title
    return path.stem.replace("_", " ")


def _nav(previous: Chapter | None, following: Chapter | None) -> str:
    def link(chapter: Chapter | None, arrow: str, align: str) -> str:
        if chapter is None:
            return f'<span style="text-align:{align}"></span>'
        text = html.escape(f"{chapter.number} · {chapter.title}")
        label = f"{arrow} {text}" if arrow == "←" else f"{text} {arrow}"
        return f'<span style="text-align:{align}"><a href="{chapter.page}">{label}</a></span>'

    return (f'<nav class="mecore-book-nav">{link(previous, "←", "left")}'
            f'<span style="text-align:center"><a href="index.html">Contents</a></span>'
            f'{link(following, "→", "right")}</nav>')


def _local(url: str) -> str | None:
    """The path part of a relative link to a file, or None (data URIs, absolute URLs, in-page anchors)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path or url.startswith(("#", "/")):
        return None
    return unquote(parts.path)


def _resolve(target: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        candidate = (folder / target).resolve()
        if candidate.is_file():
            return candidate
    return None


def _fix_references(body: str, chapter: Chapter, folders: list[Path], out: Path, pages: dict[str, str]) -> str:
    """Images nbconvert did not embed are copied to ``assets/``; relative links are pointed at the book's pages or
    at the checkout's files (relative to ``out``); what resolves to nothing is left as is and noted."""

    def image(match: re.Match) -> str:
        url = html.unescape(match.group(2))
        target = _local(url)
        if target is None:
            return match.group(0)
        found = _resolve(target, folders)
        if found is None:
            chapter.missing.append(url)
            return match.group(0)
        name = f"{hashlib.sha1(str(found).encode()).hexdigest()[:8]}_{found.name}"
        (out / "assets").mkdir(exist_ok=True)
        shutil.copyfile(found, out / "assets" / name)
        return f"{match.group(1)}assets/{html.escape(name)}{match.group(3)}"

    def link(match: re.Match) -> str:
        url = html.unescape(match.group(2))
        target = _local(url)
        if target is None:
            return match.group(0)
        fragment = "#" + urlsplit(url).fragment if urlsplit(url).fragment else ""
        if Path(target).name in pages and Path(target).suffix == ".ipynb":
            return f"{match.group(1)}{pages[Path(target).name]}{fragment}{match.group(3)}"
        found = _resolve(target, folders) or next(
            (folder / target for folder in folders if (folder / target).resolve().is_dir()), None)
        if found is None:
            chapter.missing.append(url)
            return match.group(0)
        relative = Path(os.path.relpath(Path(found).resolve(), out.resolve())).as_posix()
        return f"{match.group(1)}{html.escape(relative)}{fragment}{match.group(3)}"

    body = re.sub(r'(<img\b[^>]*?\bsrc=")([^"]*)(")', image, body)
    return re.sub(r'(<a\b[^>]*?\bhref=")([^"]*)(")', link, body)


def _index(chapters: list[Chapter], profile: str, source: Path) -> str:
    rows = "\n".join(f'<tr><td>{html.escape(c.number)}</td><td><a href="{html.escape(c.page)}">'
                     f"{html.escape(c.title)}</a></td><td>{c.figures}</td></tr>" for c in chapters)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mecore: the course ({html.escape(profile)} profile)</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:0.4em;text-align:left}}
td:first-child,td:last-child{{width:5em}}</style></head>
<body><h1>mecore: micro-expression spotting and recognition, as a runnable course</h1>
<p>The numbered notebooks as executed in the <code>{html.escape(profile)}</code> profile
(<code>{html.escape(str(source))}</code>), with their outputs.</p>
<table><thead><tr><th>Chapter</th><th>Title</th><th>Figures</th></tr></thead><tbody>
{rows}
</tbody></table></body></html>
"""


def add_cli(commands) -> None:
    parser = commands.add_parser(
        "book", help="the executed notebooks as a static HTML site (runs/book/<profile>/)",
        description="Turn the executed notebooks of runs/notebooks/<profile>/ (python -m mecore notebooks) into "
                    "runs/book/<profile>/index.html and one page per chapter, figures embedded.")
    parser.add_argument("--profile", choices=paths.PROFILES, default=None,
                        help="whose executed notebooks (default: $MECORE_PROFILE or 'default')")
    parser.add_argument("--source", type=Path, help="folder of executed notebooks (default: runs/notebooks/<profile>)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/book/<profile>)")
    parser.set_defaults(handler=_cli)


def _cli(args: argparse.Namespace) -> int:
    import sys

    try:
        book = build_book(args.profile, source=args.source, out=args.out)
    except BookError as error:
        print(f"mecore book: error: {error}", file=sys.stderr)
        return 2
    for missing in book.missing:
        print(f"mecore book: warning: a link resolves to no file: {missing}", file=sys.stderr)
    print(f"{len(book.chapters)} chapters; open {book.index}")
    return 0
