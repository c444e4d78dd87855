"""Home lists every registered page with what it shows, and every chapter in notebooks/."""

import json
from pathlib import Path

from vizlib.registry import NOTEBOOK_DIR, NOTEBOOKS, PAGES, glossary_sections, notebook_titles


def test_home_links_every_page_and_names_its_notebooks(open_page):
    at = open_page()
    links = at.get("page_link")
    # Streamlit links a page by its URL path: the same one the browser test opens
    assert [link.proto.page for link in links] == [p.url_path for p in PAGES]
    captions = [c.value for c in at.caption]
    for p in PAGES:
        assert any(all(f"`{nb}`" in c for nb in p.notebooks) for c in captions), p.title


def test_home_lists_every_notebook_in_the_folder_with_its_title(open_page):
    chapters = [p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")]
    appendices = [p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]a_*.ipynb")]
    assert appendices, "the appendices (07a_..., 11a_...) are listed too"
    on_disk = sorted(chapters + appendices)  # 07_... then 07a_...: an appendix after its chapter
    assert list(NOTEBOOKS) == on_disk
    text = "\n".join(m.value for m in open_page().markdown)
    for name, title in NOTEBOOKS.items():
        assert f"`notebooks/{name}.ipynb` — {title}" in text


def test_a_new_notebook_is_listed_by_its_heading_without_the_chapter_number(tmp_path: Path):
    def write(name: str, *cells: tuple[str, str]) -> None:
        nb = {"cells": [{"cell_type": t, "source": [s], "metadata": {}} for t, s in cells]}
        (tmp_path / name).write_text(json.dumps(nb))

    write("13_new_topic.ipynb", ("code", "# not a heading"), ("markdown", "# 13 · A new topic"))
    write("02_old.ipynb", ("markdown", "intro\n# Old one"))
    write("scratch.ipynb", ("markdown", "# not a chapter"))
    write("02a_old_appendix.ipynb", ("markdown", "# 02a · Old one, appendix"))
    assert list(notebook_titles(tmp_path).items()) == [
        ("02_old", "Old one"),
        ("02a_old_appendix", "Old one, appendix"),
        ("13_new_topic", "A new topic"),
    ]


def test_home_links_the_glossary_and_shows_every_section_of_it(open_page):
    at = open_page()
    assert any("](#glossary)" in m.value for m in at.markdown), "no link to the glossary"
    assert any("](#glossary)" in m.value for m in at.sidebar.markdown), "no sidebar link"
    assert [h.anchor for h in at.subheader if "术语表" in h.value] == ["glossary"]
    sections = glossary_sections()
    assert len(sections) >= 8
    assert [e.label for e in at.expander] == [heading for heading, _ in sections]
    shown = "\n".join(m.value for m in at.markdown)
    for term in ("键值缓存", "预填充", "存储体冲突", "锁页内存", "投机解码"):
        assert term in shown, term
