"""Run the course notebooks top to bottom and store their outputs, as CI then checks them.

`python -m minirt.notebooks execute [names]` executes `notebooks/NN_*.ipynb` and the appendices
`NNa_*.ipynb` (all, or those whose name starts with one of `names`, e.g. `00 01_kv`) in a fresh
kernel on this machine, with a progress bar over cells, and writes each back only if every cell
ran. nbval
(`pytest --nbval notebooks/`) re-runs them and compares against what is stored.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
# The chapters (`07_speculative_decoding`) and their appendices (`07a_...`), which hold the
# longer measurement stories; `07` selects a chapter and its appendix together.
NOTEBOOK_GLOBS = ("[0-9][0-9]_*.ipynb", "[0-9][0-9]a_*.ipynb")


def find_notebooks(names: Sequence[str] = (), folder: str | Path | None = None) -> list[Path]:
    """Notebooks in `folder` (default: the repository's notebooks/) matching `names` by prefix
    (`00`, `00_tour`, `00_tour.ipynb`) or by path; all of them when `names` is empty."""
    folder = Path(folder) if folder is not None else NOTEBOOK_DIR
    found = sorted(p for glob in NOTEBOOK_GLOBS for p in folder.glob(glob))
    if not names:
        return found
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path.resolve())
            continue
        hits = [p for p in found if p.name.startswith(path.name.removesuffix(".ipynb"))]
        if not hits:
            have = ", ".join(p.stem for p in found) or "none"
            raise FileNotFoundError(f"no notebook matches {name!r} in {folder} (have: {have})")
        chosen += hits
    return list(dict.fromkeys(chosen))


def execute(path: Path, timeout: int = 600, progress: bool = True) -> float:
    """Execute one notebook in place (its folder as working directory); return seconds taken.

    Raises nbclient's CellExecutionError, naming the cell, if any cell fails; the file is then
    left as it was.
    """
    import nbformat
    from nbclient import NotebookClient
    from tqdm.auto import tqdm

    nb = nbformat.read(path, as_version=4)
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    bar = tqdm(total=code_cells, desc=path.stem, unit="cell", disable=not progress)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # per-cell timestamps would change the file on every run
        on_cell_executed=lambda **_: bar.update(),
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        bar.close()
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirt.notebooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run notebooks and store their outputs")
    ex.add_argument("names", nargs="*", help="notebook name prefixes or paths (default: all)")
    ex.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    ex.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sub.add_parser("list", help="list the notebooks")
    args = parser.parse_args(argv)
    try:
        paths = find_notebooks(getattr(args, "names", ()))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "list":
        print("\n".join(str(p) for p in paths))
        return 0
    from nbclient.exceptions import CellExecutionError

    for path in paths:
        try:
            seconds = execute(path, args.timeout, progress=not args.no_progress)
        except CellExecutionError as e:
            print(f"error: {path.name} failed; nothing written.\n{e}", file=sys.stderr)
            return 1
        print(f"{path.name}: executed in {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
