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
# A chapter's appendix (`07a_<topic>.ipynb`) holds the measurement story the chapter sums up. It
# speaks the course's words, cites and links as a chapter does; its objectives, 60-second answer,
# what to remember and predictions are its chapter's (the chapter reads whole without it), so the
# tests of those parts cover the chapters only.
APPENDICES = sorted(NOTEBOOKS.glob("[0-9][0-9]a_*.ipynb"))
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


@pytest.mark.parametrize("path", CHAPTERS + APPENDICES + LAB_NOTEBOOKS, ids=lambda p: p.name)
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


@pytest.mark.parametrize("path", CHAPTERS + APPENDICES, ids=lambda p: p.name)
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


# --- The parts every chapter has, in English and Chinese ---------------------------------------

CJK = re.compile(r"[\u4e00-\u9fff]")


def _markdown(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def numbers(text: str) -> set[str]:
    """The numbers a text states ("4,096" and "4096" are one number): both languages must agree."""
    return {n.replace(",", "") for n in re.findall(r"\d+(?:[.,]\d+)*", text)}


def english_words(text: str) -> int:
    return len(re.findall(r"\b[A-Za-z]{2,}\b", text))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_opens_with_learning_objectives_in_both_languages(path):
    cells = nbformat.read(path, as_version=4).cells[:3]
    found = [c.source for c in cells if "## Learning objectives · 学习目标" in c.source]
    assert found, f"{path.name}: no learning-objectives cell among its first three"
    rows = [line for line in found[0].splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 4, f"{path.name}: a header and at least three objectives"
    for row in rows:
        english, chinese = (part.strip() for part in row.strip("|").split("|"))
        assert english_words(english) >= 3 and CJK.search(chinese), row
        assert numbers(english) == numbers(chinese), row


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_ends_with_a_60_second_answer_in_english_and_chinese(path):
    found = [s for s in _markdown(path) if s.startswith("## 60-second answer · 60 秒回答")]
    assert len(found) == 1, f"{path.name}: one 60-second answer cell"
    english, chinese = found[0].split("**EN** —", 1)[1].split("**中文** ——", 1)
    assert english_words(english) >= 120, f"{path.name}: the English answer is too thin"
    assert len(CJK.findall(chinese)) >= 200, f"{path.name}: the Chinese answer is too thin"
    assert numbers(english) == numbers(chinese), (
        f"{path.name}: the two answers state different numbers: "
        f"{sorted(numbers(english) ^ numbers(chinese))}"
    )
    cells = _markdown(path)
    answer = cells.index(found[0])
    assert cells[answer + 1].startswith("## What to remember"), (
        "the answer precedes what to remember"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_what_to_remember_is_said_in_english_and_in_chinese_with_the_same_numbers(path):
    (cell,) = [s for s in _markdown(path) if s.startswith("## What to remember")]
    english, rest = cell.split("## What to remember", 1)[1].split("### 要点回顾（中文）", 1)
    chinese = rest.split("## Exercises", 1)[0]
    assert english.count("\n- ") == chinese.count("\n- "), (
        f"{path.name}: one Chinese point per point"
    )
    assert len(CJK.findall(chinese)) >= 100
    assert numbers(english) == numbers(chinese), (
        f"{path.name}: the two lists state different numbers: "
        f"{sorted(numbers(english) ^ numbers(chinese))}"
    )


# --- The glossary and the course map -----------------------------------------------------------

GLOSSARY = NOTEBOOKS / "GLOSSARY.md"


def test_the_glossary_pairs_each_term_with_its_chinese_and_its_chapter():
    rows = [r for r in GLOSSARY.read_text().splitlines() if r.startswith("| ") and "---" not in r]
    rows = [r for r in rows if not r.startswith("| English")]
    assert len(rows) >= 80
    terms = {}
    for row in rows:
        english, chinese, chapters, meaning = (p.strip() for p in row.strip("|").split("|"))
        kept = chinese.replace("（", " (").replace("）", ")") == english  # English, as usual
        assert CJK.search(chinese) or kept, row
        assert re.fullmatch(r"\d\d(, \d\d)*", chapters), row
        assert english_words(meaning) >= 2 and CJK.search(meaning), row
        terms[english] = chinese
    for term, chinese in {
        "KV cache": "键值缓存",
        "prefill": "预填充",
        "decode": "解码",
        "paged attention": "分页注意力",
        "bank conflict": "存储体冲突",
        "pinned memory": "锁页内存",
        "speculative decoding": "投机解码",
        "continuous batching": "连续批处理",
    }.items():
        assert chinese in terms.get(term, ""), f"the glossary lacks {term} ({chinese})"


@pytest.mark.parametrize("path", CHAPTERS + APPENDICES, ids=lambda p: p.name)
def test_every_chapter_links_the_glossary(path):
    assert any("](GLOSSARY.md)" in s for s in _markdown(path)), f"{path.name}: no glossary link"


def _course_map() -> dict[str, set[str]]:
    text = (NOTEBOOKS / "README.md").read_text()
    table = text.split("## Course map", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for row in table.splitlines():
        if m := re.match(r"\| `(\d\d)_\w+` \| ([^|]*) \|", row):
            rows[m.group(1)] = set(re.findall(r"\b\d\d\b", m.group(2)))
    return rows


def test_the_course_map_lists_every_chapter_and_only_earlier_or_named_prerequisites():
    rows = _course_map()
    assert sorted(rows) == sorted(p.name[:2] for p in CHAPTERS)
    for chapter, before in rows.items():
        assert chapter not in before and before <= set(rows), (chapter, before)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_says_what_to_read_before_it_as_the_course_map_does(path):
    first = nbformat.read(path, as_version=4).cells[0].source
    lines = [line for line in first.splitlines() if line.startswith("**Before this:**")]
    assert lines, f"{path.name}: no 'Before this:' line at the top"
    before = set(re.findall(r"\b\d\d\b", lines[0].split("**先读：**")[0]))
    assert before == _course_map()[path.name[:2]], f"{path.name}: {before} against the course map"
    assert "](README.md#course-map)" in lines[0]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_asks_for_two_predictions_and_checks_each(path):
    cells = nbformat.read(path, as_version=4).cells
    asks = [i for i, c in enumerate(cells) if c.source.startswith("**Predict, then check.**")]
    assert len(asks) >= 2, f"{path.name}: {len(asks)} predict-then-check cells, want 2"
    for i in asks:
        guess = cells[i + 1]
        assert guess.cell_type == "code" and guess.source.startswith("guess_"), guess.source
        names = [n.strip() for n in guess.source.split("=")[0].split(",")]
        later = "\n".join(c.source for c in cells[i + 2 :] if c.cell_type == "code")
        for name in names:
            assert f"reveal({name}," in later, f"{path.name}: {name} is never checked"


# --- Exercises and their solutions --------------------------------------------------------------

SOLUTION = "<details><summary>Solution · 参考答案</summary>"
# Chapters whose exercises still wait for their solutions. Each is an expected failure that must
# fail (strict): once a chapter's solutions are written, its test passes and it leaves this set.
SOLUTIONS_TO_WRITE: set[str] = set()  # every chapter's exercises have their solutions


def exercises(path: Path) -> list[tuple[int, str]]:
    """(number, text) of each numbered exercise under the notebook's "## Exercises" heading."""
    cells = [s for s in _markdown(path) if "## Exercises" in s]
    if not cells:
        return []
    return exercise_items(cells[-1].split("## Exercises", 1)[1].split("\n## ", 1)[0])


def exercise_items(section: str) -> list[tuple[int, str]]:
    items = re.split(r"(?m)^(?=\d+\. )", section)[1:]
    return [(int(item.split(".", 1)[0]), item) for item in items]


def test_exercises_are_split_at_their_numbers_and_a_solution_is_found_under_each():
    solved = f"1. Do this,\n2. not that.\n\n   {SOLUTION}\n\n   Because.\n\n   </details>\n\n"
    items = exercise_items(solved + "3. And that.\n")
    assert [n for n, _ in items] == [1, 2, 3]  # each number at the start of a line opens an item
    assert [SOLUTION in text for _, text in items] == [False, True, False]


def _solution_params() -> list:
    marks = pytest.mark.xfail(strict=True, reason="solutions not written yet")
    return [
        pytest.param(p, id=p.name, marks=marks if p.stem in SOLUTIONS_TO_WRITE else ())
        for p in CHAPTERS + APPENDICES
        if exercises(p)
    ]


@pytest.mark.parametrize("path", _solution_params())
def test_every_exercise_has_a_collapsed_solution_under_it(path):
    for number, item in exercises(path):
        assert SOLUTION in item and item.rstrip().endswith("</details>"), (
            f"{path.name}: exercise {number} has no <details> solution under it"
        )
        answer = item.split(SOLUTION, 1)[1]
        assert english_words(answer) >= 40, f"{path.name}: exercise {number}'s solution is thin"


def test_every_chapter_and_appendix_with_exercises_is_checked_for_solutions():
    assert SOLUTIONS_TO_WRITE <= {p.stem for p in CHAPTERS + APPENDICES}
    assert len(_solution_params()) == len(CHAPTERS) + len(APPENDICES) - 1  # 11a has none
