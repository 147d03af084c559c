"""`python -m mecore book`: the executed notebooks as a static site whose links resolve and whose figures show."""
from __future__ import annotations

import argparse
import base64
import io
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

from mecore import book as book_module
from mecore import paths
from mecore.book import BookError, build_book

SMOKE = paths.runs_dir() / "notebooks" / "smoke"


class Page(HTMLParser):
    def __init__(self, path: Path):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.scripts: list[str] = []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs.get("src") or "")
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])


def local(url: str) -> str | None:
    parts = urlsplit(url)
    return None if parts.scheme or parts.netloc or not parts.path else unquote(parts.path)


def check_book(result) -> dict[str, Page]:
    """Every chapter linked from the index, every local link resolving to a file, every image embedded or present,
    each chapter with figure outputs showing one; returns the parsed pages by file name."""
    index = Page(result.index)
    pages = {chapter.page: Page(result.folder / chapter.page) for chapter in result.chapters}
    assert set(pages) <= set(index.links), "a chapter page is not linked from index.html"
    for name, page in [("index.html", index), *pages.items()]:
        for url in page.links:
            target = local(url)
            if target is not None:
                assert (result.folder / target).exists(), f"{name}: link {url} resolves to no file"
        for src in page.images:
            assert src.startswith("data:image/") or (local(src) and (result.folder / local(src)).is_file()), \
                f"{name}: image {src[:80]} is neither embedded nor a file"
    for chapter in result.chapters:
        if chapter.figures:
            assert pages[chapter.page].images, f"{chapter.page} had {chapter.figures} figure outputs and shows none"
        assert "index.html" in pages[chapter.page].links
    return pages


def png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1.5))
    axes.plot([0, 1, 2], [0, 1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=40)
    plt.close(figure)
    return buffer.getvalue()


def executed(tmp_path: Path) -> tuple[Path, Path]:
    """Two executed notebooks as papermill leaves them, in ``runs``; ``base`` is the folder they ran in."""
    runs, base = tmp_path / "runs", tmp_path / "notebooks"
    (base / "figures").mkdir(parents=True)
    runs.mkdir()
    image = png()
    (base / "figures" / "saved.png").write_bytes(image)
    (runs / "beside.png").write_bytes(image)
    (base / "notes.md").write_text("notes")
    first = nbformat.v4.new_notebook()
    first.cells = [
        nbformat.v4.new_markdown_cell("# 01 · A **small** chapter\n\nEnergy: $$E = m c^2$$ and $\\alpha_1$.\n\n"
                                      "![a saved figure](figures/saved.png)\n\n<img src=\"beside.png\" width=\"50\">\n\n"
                                      "Next: [chapter two](02_second.ipynb#Second), [notes](notes.md)."),
        nbformat.v4.new_code_cell("plt.plot([0, 1, 2], [0, 1, 0])", execution_count=1, outputs=[
            nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(image).decode(),
                                                         "text/plain": "<Figure size 200x150 with 1 Axes>"}),
            nbformat.v4.new_output("stream", name="stdout", text="plotted\n")]),
    ]
    second = nbformat.v4.new_notebook()
    second.cells = [nbformat.v4.new_markdown_cell("Intro text.\n\n## Second\n\nNo figures here."),
                    nbformat.v4.new_code_cell("1 + 1", execution_count=1, outputs=[
                        nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)])]
    nbformat.write(first, runs / "01_small.ipynb")
    nbformat.write(second, runs / "02_second.ipynb")
    return runs, base


def test_book_of_a_small_executed_notebook(tmp_path):
    runs, base = executed(tmp_path)
    result = build_book("smoke", source=runs, out=tmp_path / "book", base=base)
    assert [(c.number, c.title, c.figures) for c in result.chapters] == [
        ("01", "A small chapter", 1), ("02", "Second", 0)]
    assert result.missing == []
    pages = check_book(result)
    first, second = pages["01_small.html"], pages["02_second.html"]
    assert len(first.images) == 3 and sum(src.startswith("data:image/png") for src in first.images) >= 2
    assert any(src.startswith("assets/") for src in first.images)  # the <img> nbconvert did not embed: copied
    assert "02_second.html#Second" in first.links and "02_second.html" in first.links  # link + next
    assert any(link.endswith("notebooks/notes.md") for link in first.links)
    assert "01_small.html" in second.links and "02_second.html" not in second.links  # previous, no next
    assert any("mathjax" in src.lower() for src in first.scripts)
    text = (result.folder / "01_small.html").read_text(encoding="utf-8")
    assert "E = m c^2" in text and "<title>01 · A small chapter</title>" in text
    index = result.index.read_text(encoding="utf-8")
    assert "A small chapter" in index and "Second" in index

    # a rebuild replaces the pages of notebooks that are gone
    (runs / "02_second.ipynb").unlink()
    again = build_book("smoke", source=runs, out=tmp_path / "book", base=base)
    assert [c.page for c in again.chapters] == ["01_small.html"]
    assert not (tmp_path / "book" / "02_second.html").exists()


def test_no_executed_notebooks_is_a_one_line_error(tmp_path, capsys):
    empty = tmp_path / "runs" / "notebooks" / "default"
    with pytest.raises(BookError, match="python -m mecore notebooks --profile default"):
        build_book("default", source=empty, out=tmp_path / "book")
    code = book_module._cli(argparse.Namespace(profile="default", source=empty, out=tmp_path / "book"))
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and str(empty) in error and "mecore notebooks" in error


def test_book_of_the_smoke_run(tmp_path, monkeypatch):
    """The smoke run's executed chapters where a run left them; on a fresh clone (CI) two short chapters are
    executed in the smoke profile first, as ``python -m mecore notebooks`` runs them."""
    source = SMOKE
    if not any(SMOKE.glob("*.ipynb")):
        from mecore.__main__ import run_notebooks

        monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")
        source = run_notebooks("smoke", only=["00", "03"])
    names = sorted(path.stem for path in source.glob("*.ipynb"))
    assert names, source
    result = build_book("smoke", source=source, out=tmp_path / "book")
    assert set(names) <= {Path(chapter.page).stem for chapter in result.chapters}
    check_book(result)
