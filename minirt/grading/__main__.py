"""Command line: `python -m minirt.grading NOTEBOOK [--seed N] [--timeout S] [--json]`.

Prints the score table and exits 0 at full marks, 1 below, 2 when the notebook can't be graded
(missing, not JSON, not a known lab). The seed is printed so that a run can be replayed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minirt.grading.core import LABS, find_lab
from minirt.grading.runner import grade_notebook


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m minirt.grading", description="Grade a lab notebook against minirt."
    )
    p.add_argument("notebook", type=Path, help="the lab notebook to grade (save it first)")
    p.add_argument("--lab", choices=sorted(LABS), help="default: from the notebook's name")
    p.add_argument("--seed", type=int, help="replay the cases of an earlier run")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per task (default 30)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)

    if not args.notebook.is_file():
        print(
            f"error: {args.notebook} is not a file; pass the path of your .ipynb", file=sys.stderr
        )
        return 2
    lab = args.lab or find_lab(args.notebook.stem)
    if lab is None:
        print(
            f"error: {args.notebook.name} is not named after a lab ({', '.join(sorted(LABS))}); "
            "rename it or pass --lab",
            file=sys.stderr,
        )
        return 2
    try:
        report = grade_notebook(args.notebook, lab, args.seed, args.timeout)
    except (ValueError, OSError) as e:  # nbformat's NotJSONError is a ValueError
        print(f"error: cannot read {args.notebook} as a notebook: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(f"{lab}: {args.notebook} (seed {report.seed}; --seed {report.seed} replays it)\n")
        print(report.table())
    return 0 if report.full_marks else 1


if __name__ == "__main__":
    sys.exit(main())
