"""The page registry (what Home lists) agrees with the page files Streamlit serves."""

import pytest

from vizlib.registry import NOTEBOOKS, PAGES, page_files, page_for


def test_every_page_file_is_registered_and_every_registered_page_exists():
    assert sorted(p.file for p in PAGES) == page_files()


def test_page_files_are_numbered_in_registry_order():
    files = [p.file for p in PAGES]
    assert files == sorted(files)
    for p in PAGES:
        prefix = p.file.removeprefix("pages/").split("_", 1)[0]
        assert prefix.isdigit() and len(prefix) == 2, p.file


def test_every_page_names_a_known_notebook():
    for p in PAGES:
        assert p.notebooks, p.file
        assert set(p.notebooks) <= set(NOTEBOOKS), p.file


def test_url_path_drops_the_number_prefix():
    assert page_for("viz_app/pages/02_Scheduler.py").url_path == "Scheduler"


def test_an_unregistered_page_is_refused_with_a_hint():
    with pytest.raises(KeyError, match="add a Page entry"):
        page_for("pages/99_Nope.py")
