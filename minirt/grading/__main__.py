"""Command line: `python -m minirt.grading [NOTEBOOK | FOLDER ...] [--all] [--report FILE]`.

Grades each notebook (a folder: every lab notebook in it; `--all`: the labs in `labs/`) and prints
its score table; `--report FILE` also writes one JSON an instructor can collect (every notebook's
tasks, scores, cases and messages, the seed, the date). Exits 0 when every notebook has full
marks, 1 below, 2 when a notebook can't be graded (missing, not JSON, not a known lab). The seed
is printed so that a run can be replayed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
from pathlib import Path

from minirt.grading.core import LABS, SOURCE_DIR, find_lab
from minirt.grading.runner import grade_notebook

STUDENT_DIR = SOURCE_DIR.parent  # labs/: the learners' notebooks
REPORT_SCHEMA = 1


def notebooks_in(folder: Path) -> list[Path]:
    """The lab notebooks of a folder, by name (labNN_…), in order."""
    return sorted(p for p in folder.glob("lab[0-9]*.ipynb") if find_lab(p.stem))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m minirt.grading", description="Grade lab notebooks against minirt."
    )
    p.add_argument(
        "notebooks", type=Path, nargs="*", help="lab notebooks (save first) or folders of them"
    )
    p.add_argument("--all", action="store_true", help=f"every lab notebook in {STUDENT_DIR}")
    p.add_argument("--lab", choices=sorted(LABS), help="default: from the notebook's name")
    p.add_argument("--seed", type=int, help="replay the cases of an earlier run")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per task (default 30)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--report", type=Path, help="also write the JSON report to this file")
    args = p.parse_args(argv)

    paths: list[Path] = []
    for path in args.notebooks + ([STUDENT_DIR] if args.all else []):
        paths += notebooks_in(path) if path.is_dir() else [path]
    if not paths:
        p.error("name a notebook or a folder of them, or pass --all")
    if args.lab and len(paths) > 1:
        p.error("--lab names the lab of one notebook; pass one notebook with it")
    for path in paths:
        if not path.is_file():
            print(f"error: {path} is not a file; pass the path of your .ipynb", file=sys.stderr)
            return 2
        if (args.lab or find_lab(path.stem)) is None:
            print(
                f"error: {path.name} is not named after a lab ({', '.join(sorted(LABS))}); "
                "rename it or pass --lab",
                file=sys.stderr,
            )
            return 2

    seed = random.SystemRandom().randrange(2**32) if args.seed is None else args.seed
    reports = []
    for path in paths:
        lab = args.lab or find_lab(path.stem)
        try:
            report = grade_notebook(path, lab, seed, args.timeout)
        except (ValueError, OSError) as e:  # nbformat's NotJSONError is a ValueError
            print(f"error: cannot read {path} as a notebook: {e}", file=sys.stderr)
            return 2
        reports.append(report)
        if not args.json:
            print(f"{lab}: {path} (seed {seed}; --seed {seed} replays it)\n")
            print(report.table(), end="\n\n")

    collected = {
        "schema": REPORT_SCHEMA,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "command": "python -m minirt.grading " + " ".join(sys.argv[1:] if argv is None else argv),
        "score": round(sum(r.score for r in reports), 2),
        "points": sum(r.points for r in reports),
        "labs": [r.to_dict() for r in reports],
    }
    if args.json:  # one notebook: its report, as before; several: the collected one
        print(json.dumps(reports[0].to_dict() if len(reports) == 1 else collected, indent=1))
    elif len(reports) > 1:
        print(f"total: {collected['score']:g}/{collected['points']} over {len(reports)} labs")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(collected, indent=1) + "\n")
        if not args.json:
            print(f"wrote {args.report}")
    return 0 if all(r.full_marks for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
