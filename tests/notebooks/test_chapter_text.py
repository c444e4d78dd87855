"""What a learner reads in the chapters, labs and dashboard: the course's own words, citations
that open, and the parts every chapter has.

A chapter speaks of the course and the runtime only: no issue numbers, commit hashes or notes
from the sessions that wrote it. Every citation of REFERENCES.md is a link to an entry that
exists.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
LAB_NOTEBOOKS = sorted((ROOT / "labs").rglob("lab[0-9]*.ipynb"))
DASHBOARD = sorted((ROOT / "viz_app").rglob("*.py"))
REFERENCES = ROOT / "REFERENCES.md"

# Words that belong to the project's bookkeeping, not to the course. Each pattern is narrow on
# purpose: "issue" is also a verb ("issue the copy"), "commit" a method (`BlockManager.commit`)
# and "committed" how the course's benchmark files are kept, so only their bookkeeping uses are
# refused: an issue's number or its possessive, a commit message or hash, a to-do.
INTERNAL = re.compile(
    "|".join(
        [
            r"\bissues?\s*#?\d+",  # "issue 7", "Issue 8", "issue #23"
            r"\bissue's\b",  # "the target" (a verb has no possessive)
            r"\bthe issue (?:behind|asks|asked|says|said)\b",
            r"\bcommit(?:ted)?\s+(?:message|hash)\b",
            r"\bcommit\s+`?[0-9a-f]{7,40}\b",
            r"\b(?:TODO|FIXME)\b",
            r"\bsession\s+\d+\b",
            r"\b(?:from|in|this|that|previous|earlier|another) session\b",
            r"\bpull request\b|\bPR\s*#?\d+\b",
        ]
    ),
    re.IGNORECASE,
)
# A git hash in prose: 7-40 hex digits with at least one letter and one digit. Checked in
# markdown and dashboard strings only: code outputs print hex data (block hashes) legitimately.
HEX = re.compile(r"(?<![\w./#-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w./-])")


def internal_words(text: str, prose: bool = True) -> list[str]:
    found = [m.group(0) for m in INTERNAL.finditer(text)]
    return found + ([m.group(0) for m in HEX.finditer(text)] if prose else [])


def test_the_internal_word_check_catches_bookkeeping_and_spares_the_course():
    for text in [
        "issue 7's 1.8×",
        "Issue 8 set W4A16",
        "The issue behind this chapter asked",
        "in the commit message of `ef8996c`",
        "Three more fixes (commit `9d8f846`)",
        "TODO from session 3",
        "numbers from an earlier session",
    ]:
        assert internal_words(text), text
    for text in [
        "the CPU issues the copy and returns at once",
        "issue the swap-in just before the step",
        "`bm.commit(seq_id=1, ...)` publishes the hashes",
        "the committed H100 run of `python -m minirt.bench gpu`",
        "the prefix-cache commit of each sequence",
        "one session of the benchmark",
    ]:
        assert not internal_words(text), text
    assert not internal_words("8d959a26e14e92de  [5, 6, 7, 8]", prose=False)  # an output's data
    assert internal_words("its numbers are in 8d959a2", prose=True)


def _notebook_texts(path: Path) -> list[tuple[str, str, bool]]:
    """(where, text, is_prose) for every cell's source and every text output of a notebook."""
    out = []
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        where = f"{path.relative_to(ROOT)} cell {i}"
        out.append((where, cell.source, cell.cell_type == "markdown"))
        for o in cell.get("outputs", []):
            text = o.get("text") or o.get("data", {}).get("text/plain", "")
            out.append((f"{where} output", text, False))
    return out


@pytest.mark.parametrize("path", CHAPTERS + LAB_NOTEBOOKS, ids=lambda p: p.name)
def test_chapters_and_labs_speak_of_the_course_only(path):
    found = [
        (w, hit) for w, text, prose in _notebook_texts(path) for hit in internal_words(text, prose)
    ]
    assert not found, f"project-internal words shown to learners: {found}"


def _shown_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a dashboard module that can reach the page: all but docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@pytest.mark.parametrize("path", DASHBOARD, ids=lambda p: str(p.relative_to(ROOT)))
def test_dashboard_pages_speak_of_the_course_only(path):
    found = [(line, hit) for line, text in _shown_strings(path) for hit in internal_words(text)]
    assert not found, f"{path.relative_to(ROOT)}: project-internal words shown to learners: {found}"


def reference_anchors() -> set[str]:
    """The anchors REFERENCES.md offers: explicit `<a id=...>` and GitHub's heading slugs."""
    text = REFERENCES.read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for heading in re.findall(r"^#+\s+(.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_the_references_file_exists_and_gives_each_entry_a_source():
    assert REFERENCES.is_file(), "chapters cite REFERENCES.md at the repository root"
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', REFERENCES.read_text()))
    assert len(anchors) >= 30
    for must in ("flashattention3", "online-softmax", "distserve", "vidur", "marlin", "deepep"):
        assert must in anchors, must


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_citation_of_the_references_file_is_a_link_to_an_entry(path):
    anchors = reference_anchors()
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "markdown":
            continue
        links = re.findall(r"\]\(\.\./REFERENCES\.md(#[^)\s]*)?\)", cell.source)
        for anchor in links:
            assert anchor and anchor[1:] in anchors, f"{path.name} cell {i}: no entry {anchor!r}"
        unlinked = re.sub(r"\[[^\]]*\]\(\.\./REFERENCES\.md[^)]*\)", "", cell.source)
        assert "REFERENCES.md" not in unlinked, (
            f"{path.name} cell {i} names REFERENCES.md without linking it: write "
            "[...](../REFERENCES.md#entry)"
        )
