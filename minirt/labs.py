"""Build the student version of each lab: `python -m minirt.labs build` (or `check`).

A lab's source `labs/source/labNN_topic.ipynb` holds the solution between nbgrader's
`### BEGIN SOLUTION` / `### END SOLUTION` markers. nbgrader's ClearSolutions (run through
nbconvert) swaps each region for `raise NotImplementedError("<hint>")`, the hint taken from the
region's `# HINT:` comment, and outputs are cleared; the result goes to `labs/labNN_topic.ipynb`,
which is committed for learners to open (the solutions stay off their path, in `labs/source/`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from nbconvert.preprocessors import ClearOutputPreprocessor
from traitlets import Unicode
from traitlets.config import Config

try:
    from nbgrader.preprocessors import ClearSolutions
except ImportError as e:  # a test extra: learners don't need it (labs/ comes built)
    NEEDS = (
        "building the student labs needs nbgrader, one of the test extras: run "
        "`.venv/bin/pip install -e '.[test]'` (or `./workbench test` once), then build again"
    )
    if __name__ == "__main__":  # the command line: one line, no traceback
        sys.exit(f"error: {NEEDS}")
    raise ImportError(NEEDS) from e

ROOT = Path(__file__).resolve().parent.parent
LABS_DIR = ROOT / "labs"  # the student notebooks, which learners open
SOURCE_DIR = LABS_DIR / "source"  # the lab sources, with their solutions
HINT = "# HINT:"
# ClearSolutions writes one fixed stub for every region; the placeholder is then replaced by the
# hint of the region it stands for (regions and stubs come in the same order).
PLACEHOLDER = "__MINIRT_HINT__"
CODE_STUB = f"# YOUR CODE HERE\nraise NotImplementedError({PLACEHOLDER})"


def _region_hints(source: str, begin: str, end: str) -> list[str]:
    """The `# HINT:` text of each solution region of a cell, in order ("" when it has none)."""
    hints, current = [], None
    for line in source.splitlines():
        if begin in line:
            current = []
        elif end in line and current is not None:
            hints.append(" ".join(current))
            current = None
        elif current is not None and line.strip().startswith(HINT):
            current.append(line.strip()[len(HINT) :].strip())
    return hints


class ClearSolutionsWithHints(ClearSolutions):
    """nbgrader's ClearSolutions, each stub raising NotImplementedError with its region's hint."""

    default_hint = Unicode("replace this line with your code").tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        hints = []
        if cell.cell_type == "code":
            b, e = self.begin_solution_delimeter, self.end_solution_delimeter
            hints = _region_hints(cell.source, b, e)
        cell, resources = super().preprocess_cell(cell, resources, index)
        for hint in hints:
            stub = json.dumps(hint or self.default_hint, ensure_ascii=False)  # a valid str literal
            cell.source = cell.source.replace(PLACEHOLDER, stub, 1)
        cell.source = cell.source.replace(PLACEHOLDER, json.dumps(self.default_hint))
        return cell, resources


def student_version(source: Path) -> nbformat.NotebookNode:
    """The learner's notebook made from a lab source: solutions replaced by stubs, no outputs."""
    c = Config()
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    exporter = NotebookExporter(config=c)
    exporter.register_preprocessor(ClearSolutionsWithHints(config=c), enabled=True)
    exporter.register_preprocessor(ClearOutputPreprocessor(config=c), enabled=True)
    body, _ = exporter.from_filename(str(source))
    return nbformat.reads(body, as_version=4)


def lab_sources(source_dir: Path = SOURCE_DIR) -> list[Path]:
    return sorted(source_dir.glob("lab[0-9]*.ipynb"))


def build(source_dir: Path = SOURCE_DIR, out_dir: Path = LABS_DIR) -> list[Path]:
    """Write the student version of every lab in `source_dir` to `out_dir` (default labs/)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in lab_sources(source_dir):
        nbformat.write(student_version(source), out_dir / source.name)
        written.append(out_dir / source.name)
    return written


def stale(source_dir: Path = SOURCE_DIR, out_dir: Path = LABS_DIR) -> list[str]:
    """Why the committed student notebooks differ from a fresh build (empty: they are current)."""
    problems = []
    for source in lab_sources(source_dir):
        committed = out_dir / source.name
        if not committed.is_file():
            problems.append(f"{committed} is missing")
            continue
        fresh = student_version(source).cells
        old = nbformat.read(committed, as_version=4).cells
        if len(fresh) != len(old):
            problems.append(f"{committed}: {len(old)} cells, a fresh build has {len(fresh)}")
            continue
        for i, (a, b) in enumerate(zip(old, fresh, strict=True), start=1):
            if (a.cell_type, a.source, a.metadata) != (b.cell_type, b.source, b.metadata):
                problems.append(f"{committed}: cell {i} differs from a fresh build")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minirt.labs", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["build", "check"], help="write, or compare with a build")
    p.add_argument("--labs", type=Path, default=SOURCE_DIR, help="folder of the lab sources")
    p.add_argument("--out", type=Path, default=LABS_DIR, help="student folder (default: labs/)")
    args = p.parse_args(argv)
    if args.command == "build":
        for path in build(args.labs, args.out):
            print(f"wrote {path}")
        return 0
    problems = stale(args.labs, args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("rebuild with: python -m minirt.labs build", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
