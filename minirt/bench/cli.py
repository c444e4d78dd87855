"""What the topics' command lines share (`python -m minirt.bench <topic>`): the results folder,
the progress switch and comma-separated sizes. Each topic module adds its own subcommand with
these (`add_parser`) and runs it (`main`); `minirt.bench.__main__` lists the topics."""

from __future__ import annotations

import argparse

from minirt.results import DEFAULT_OUT


def add_out(parser: argparse.ArgumentParser, help: str = "results folder") -> None:
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=help)


def add_no_progress(parser: argparse.ArgumentParser, help: str = "hide the progress bar") -> None:
    parser.add_argument("--no-progress", action="store_true", help=help)


def progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)


def int_list(text: str) -> tuple[int, ...]:
    """ "1,32" -> (1, 32): batch sizes, process counts (all >= 1)."""
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1,32, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes
