"""`python -m minirt.notebooks` finds notebooks by name prefix and refuses unknown names."""

import pytest

from minirt.notebooks import NOTEBOOK_DIR, find_notebooks, main


def test_names_select_notebooks_by_prefix(tmp_path):
    for name in ("00_tour.ipynb", "01_kv_cache.ipynb", "02_scheduling.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in find_notebooks((), tmp_path)] == [
        "00_tour.ipynb",
        "01_kv_cache.ipynb",
        "02_scheduling.ipynb",
    ]
    picked = find_notebooks(("02", "00_tour.ipynb", "00"), tmp_path)
    assert [p.name for p in picked] == ["02_scheduling.ipynb", "00_tour.ipynb"]


def test_an_unknown_name_says_which_notebooks_exist(tmp_path):
    (tmp_path / "00_tour.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError, match="have: 00_tour"):
        find_notebooks(("07",), tmp_path)


def test_list_prints_the_repository_notebooks(capsys):
    assert main(["list"]) == 0
    assert str(NOTEBOOK_DIR / "00_tour.ipynb") in capsys.readouterr().out
    assert main(["execute", "99_nothing"]) == 2


def test_a_chapter_prefix_selects_its_appendix_too(tmp_path):
    for name in ("07_spec.ipynb", "07a_spec_appendix.ipynb", "08_quant.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in find_notebooks((), tmp_path)] == [
        "07_spec.ipynb",
        "07a_spec_appendix.ipynb",
        "08_quant.ipynb",
    ]
    assert [p.name for p in find_notebooks(("07",), tmp_path)] == [
        "07_spec.ipynb",
        "07a_spec_appendix.ipynb",
    ]
    assert [p.name for p in find_notebooks(("07a",), tmp_path)] == ["07a_spec_appendix.ipynb"]
