"""One JSON file per benchmark run, the same shape for every topic and device (written by
`minirt.bench`, read by `minirt.tools.results`, the notebooks and the dashboard).

`write_results` stamps a run with the machine, the library versions, the date and the command, so
a number in a notebook can always be traced to where it came from. Files land in
`<out>/<device>/<topic>-<date>.json` (e.g. `bench/results/h100/transfers-20250101-120000.json`).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = 1
DEFAULT_OUT = Path("bench/results")
_PACKAGES = ("torch", "minirt", "transformers")


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), or the platform's best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: CPU, core count, OS (and torch's thread count if loaded)."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
    }
    if "torch" in sys.modules:  # only report what the benchmark really used
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def versions() -> dict[str, str | None]:
    """Python and the installed versions of the packages that decide the numbers."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_results(
    topic: str,
    device: str,
    results: list[dict[str, Any]],
    out_dir: str | os.PathLike[str] = DEFAULT_OUT,
    command: str | None = None,
    machine: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write one run's results as `<out_dir>/<device>/<topic>-<date>.json`; return the path.

    `config` records the benchmark's own settings (sizes, engine arguments) beside the results.
    """
    now = datetime.now(UTC)
    record = {
        "schema": SCHEMA,
        "topic": topic,
        "device": device,
        "machine": machine if machine is not None else machine_info(),
        "versions": versions(),
        "date": now.isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join(sys.argv),
        "config": config or {},
        "results": results,
    }
    folder = Path(out_dir) / device
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{topic}-{now:%Y%m%d-%H%M%S}.json"
    for n in range(1, 100):  # two runs in the same second keep both files
        if not path.exists():
            break
        path = folder / f"{topic}-{now:%Y%m%d-%H%M%S}-{n}.json"
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results file back, refusing files of another schema with a clear message."""
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        if not isinstance(record, dict):
            what = f"holds a JSON {type(record).__name__}, not a minirt benchmark result"
        elif "schema" not in record:
            what = 'has no "schema" field: not a minirt benchmark result'
        else:
            what = f"is a result of schema {record['schema']!r}, not schema {SCHEMA}"
        raise ValueError(
            f"{path} {what}; re-run the benchmark with `python -m minirt.bench` to regenerate it"
        )
    return record
