"""The student notebooks: built from the lab sources, current, solutions hidden, hints kept."""

import re

import nbformat
import pytest

from minirt import labs
from minirt.grading import LABS

SOURCES = labs.lab_sources()


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    labs.build(out_dir=out)
    return out


def cells(path):
    return [(c.cell_type, c.source, c.metadata) for c in nbformat.read(path, as_version=4).cells]


def test_every_lab_source_has_a_registered_grader():
    assert SOURCES, "no labs/source/lab*.ipynb found"
    assert [s.stem for s in SOURCES if s.stem not in LABS] == []


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_committed_student_notebook_matches_a_fresh_build(source, fresh_build):
    committed = labs.LABS_DIR / source.name
    assert committed.is_file(), "run: python -m minirt.labs build"
    assert cells(committed) == cells(fresh_build / source.name), (
        f"{committed} is stale; run: python -m minirt.labs build"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_student_version_hides_every_solution_and_keeps_its_hint(source, fresh_build):
    original = nbformat.read(source, as_version=4)
    student = nbformat.read(fresh_build / source.name, as_version=4)
    regions = sum(c.source.count("### BEGIN SOLUTION") for c in original.cells)
    text = "\n".join(c.source for c in student.cells)
    assert "SOLUTION" not in text and "# HINT:" not in text
    stubs = re.findall(r'raise NotImplementedError\("([^"]+)"\)', text)
    assert len(stubs) == regions > 0
    assert labs.ClearSolutionsWithHints().default_hint not in stubs  # every region has a hint
    assert all(c.get("outputs", []) == [] for c in student.cells)


def test_building_without_nbgrader_is_one_line_naming_what_to_install():
    import subprocess
    import sys

    hide = "import sys, runpy; sys.modules['nbgrader'] = None; sys.argv[1:] = ['build']; "
    run = "runpy.run_module('minirt.labs', run_name='__main__')"
    r = subprocess.run([sys.executable, "-c", hide + run], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "pip install -e '.[test]'" in r.stderr, r.stderr
