"""The README stays true: its paths exist, its commands parse, and its first hour runs.

The first-hour walk runs every command that section names, as a new user would after
`source .venv/bin/activate` (`python` is this interpreter), in a scratch folder beside the labs.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = [ROOT / "README.md", ROOT / "docs" / "development.md"]


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def code_commands(text: str) -> list[list[str]]:
    """Each `python -m ...` line of the text's fenced blocks, split as a shell would."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("python -m ")]


def repo_paths(text: str) -> set[str]:
    """Backticked words that name a file or folder of the repository."""
    words = re.findall(r"`([^`\s]+)`", text) + re.findall(r"\]\(([^)#\s]+)\)", text)
    prefixes = ("minirt/", "notebooks/", "labs/", "viz_app/", "tests/", "bench/", "docs/", "../")
    return {w for w in words if w.startswith(prefixes) and "<" not in w and "*" not in w}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_a_document_names_exists(doc):
    missing = []
    for word in sorted(repo_paths(doc.read_text(encoding="utf-8"))):
        path = (doc.parent / word) if word.startswith("../") else ROOT / word
        if not path.exists():
            missing.append(word)
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_every_command_in_the_readme_parses():
    from minirt.__main__ import build_parser as minirt_parser
    from minirt.bench.__main__ import build_parser as bench_parser

    parsers = {"minirt": minirt_parser(), "minirt.bench": bench_parser()}
    commands = code_commands(README)
    assert len(commands) > 15
    for argv in commands:
        module, args = argv[2], argv[3:]
        assert importlib.util.find_spec(module), f"README runs a missing module: {module}"
        if module in parsers and "--help" not in args:
            parsers[module].parse_args(args)  # SystemExit(2) on an unknown command or flag


def test_the_first_hour_names_real_notebooks_labs_and_pages():
    sys.path.insert(0, str(ROOT / "viz_app"))
    try:
        from vizlib.registry import PAGES
    finally:
        sys.path.remove(str(ROOT / "viz_app"))
    text = section("Your first hour")
    titles = {p.title for p in PAGES}
    pages = set(re.findall(r"\*([A-Z][^*]+)\* page", text))
    assert pages and pages <= titles, pages - titles
    assert "notebooks/00_tour.ipynb" in text and "labs/lab01_kv_blocks.ipynb" in text


def test_the_first_hour_commands_run(tmp_path):
    (tmp_path / "labs").symlink_to(ROOT / "labs")
    commands = code_commands(section("Your first hour"))
    assert len(commands) >= 4
    for argv in commands:
        r = subprocess.run(
            [sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert "Traceback" not in r.stderr, (argv, r.stderr)
        if argv[2] == "minirt.grading":  # the untouched student lab: graded, 0 marks, exit 1
            assert r.returncode == 1 and "total" in r.stdout and "0/" in r.stdout, r.stdout
        else:
            assert r.returncode == 0, (argv, r.stderr)
    assert (tmp_path / "run.json").exists()
