"""Command lines of the bench entry points: `--help` prints the module's documentation, and
an argument a command does not take is an error (these commands are configured through
the environment, and a run that ignored a typo would overwrite bench/results/)."""

from __future__ import annotations

import argparse


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of `python -m module`, whose help is `doc` (the module's docstring), laid
    out as written."""
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
