"""Find the newest committed benchmark result for a topic, so a notebook shows real numbers.

`latest_results("decode", device="h100")` returns the newest `bench/results/h100/decode-*.json`
record, validated by `minirt.bench.load_results`, or None when none is committed yet;
`results_section` turns it into the text a notebook prints (or says plainly that there is none).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minirt.results import load_results
from minirt.tools.text import format_table

# The repository's results folder (an editable install); a notebook run from notebooks/ or the
# repository root finds it through the working directory as well.
_PACKAGE_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def results_root() -> Path:
    """The first `bench/results` folder found: ./, ../, then beside the package."""
    for candidate in (Path.cwd() / "bench" / "results", Path.cwd().parent / "bench" / "results"):
        if candidate.is_dir():
            return candidate
    return _PACKAGE_RESULTS


@dataclass(frozen=True)
class ResultFile:
    """One committed result file, known from its name: `<device>/<topic>-<stamp>[-n].json`."""

    path: Path
    device: str
    topic: str
    stamp: str  # YYYYmmdd-HHMMSS (UTC, as write_results names files)
    n: int = 0  # a second run in the same second gets -1, -2, …

    @property
    def date(self) -> str:
        d, t = self.stamp.split("-")
        return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:4]}:{t[4:]}"


def find_results(
    topics: str | Sequence[str], root: str | os.PathLike[str] | None = None
) -> list[ResultFile]:
    """Every `<root>/<device>/<topic>-YYYYmmdd-HHMMSS[-n].json` of `topics`, newest first (by the
    stamp in the name; `root` defaults to `results_root()`). Found by name only, so one
    malformed file can't hide the others; the dashboard pages list runs with it."""
    topics = [topics] if isinstance(topics, str) else list(topics)
    names = re.compile(
        rf"^({'|'.join(map(re.escape, topics))})-(\d{{8}})-(\d{{6}})(?:-(\d+))?\.json$"
    )
    folder = Path(root) if root is not None else results_root()
    found = []
    if folder.is_dir():
        for device in sorted(p for p in folder.iterdir() if p.is_dir()):
            for path in sorted(device.glob("*.json")):
                if m := names.match(path.name):
                    topic, day, time, n = m.groups()
                    found.append(ResultFile(path, device.name, topic, f"{day}-{time}", int(n or 0)))
    return sorted(found, key=lambda f: (f.stamp, f.n, f.device, f.topic), reverse=True)


def latest_results(
    topics: str | Sequence[str], device: str = "h100", root: str | os.PathLike[str] | None = None
) -> dict[str, Any] | None:
    """The newest result record of any of `topics` on `device`, or None if there is none.

    Files are `<root>/<device>/<topic>-YYYYmmdd-HHMMSS[-n].json`; "newest" is by the record's
    own `date` (then by file name), so a copied file with a fresh mtime does not win.
    """
    topics = [topics] if isinstance(topics, str) else list(topics)
    folder = Path(root) if root is not None else results_root()
    folder = folder / device
    if not folder.is_dir():
        return None
    names = re.compile(rf"^({'|'.join(map(re.escape, topics))})-\d{{8}}-\d{{6}}(-\d+)?\.json$")
    records = []
    for path in sorted(folder.iterdir()):
        if names.match(path.name):
            record = load_results(path)
            record["path"] = str(path)
            records.append(record)
    if not records:
        return None
    return max(records, key=lambda r: (str(r.get("date", "")), Path(r["path"]).name))


def select_rows(
    rows: Sequence[dict[str, Any]],
    name: str | None = None,
    where: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The rows of a run that measured `name` and match `where`: each key's value equals the
    given one, or is among them when a list or tuple is given (`{"batch": [1, 64]}`)."""

    def matches(value: Any, wanted: Any) -> bool:
        return value in wanted if isinstance(wanted, list | tuple) else value == wanted

    return [
        r
        for r in rows
        if (name is None or r.get("name") == name)
        and all(matches(r.get(k), v) for k, v in (where or {}).items())
    ]


def results_section(
    topics: str | Sequence[str],
    device: str = "h100",
    root: str | os.PathLike[str] | None = None,
    command: str | None = None,
    name: str | None = None,
    where: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
) -> str:
    """What a notebook prints under "real H100 numbers": the newest run, or why there is none.

    A run often measures several things; `name`, `where` (see `select_rows`) and `columns` print
    only the part a chapter is about, as one table.
    """
    topics = [topics] if isinstance(topics, str) else list(topics)
    record = latest_results(topics, device, root)
    if record is None:
        how = command or "python -m minirt.bench"
        pattern = topics[0] if len(topics) == 1 else "{" + ",".join(topics) + "}"
        return (
            f"No {device.upper()} numbers are committed yet (looked for "
            f"bench/results/{device}/{pattern}-*.json). Once `{how}` has run on "
            f"an {device.upper()} and its JSON is committed, this cell shows it. Until then only "
            "the published figures quoted above stand in, and they are not ours."
        )
    machine = record.get("machine", {})
    config = record.get("config") or {}
    host = machine.get("gpu") or config.get("gpu") or machine.get("cpu") or record.get("device")
    head = [
        f"{record['topic']} on {record['device']} ({host}), {record.get('date', '?')}",
        f"command: {record.get('command', '?')}",
        f"file: {Path(record['path']).name}",
        "",
    ]
    rows = record.get("results", [])
    if name is not None or where or columns:
        return "\n".join(head) + format_table(select_rows(rows, name, where), columns)
    if not all("name" in r for r in rows):
        return "\n".join(head) + format_table(rows)
    # Rows of one run often measure different things ("name"): one table each.
    tables = []
    for kind in dict.fromkeys(r["name"] for r in rows):
        tables.append(f"[{kind}]\n" + format_table([r for r in rows if r["name"] == kind]))
    return "\n".join(head) + "\n\n".join(tables)
