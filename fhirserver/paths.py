"""Where the top-level declarative folders (capability/, migrations/, terminology/) live."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root (FHIRSERVER_HOME overrides, e.g. in a container)."""
    home = os.environ.get("FHIRSERVER_HOME")
    return Path(home) if home else Path(__file__).resolve().parents[1]


def project_dir(name: str) -> Path:
    """One of the top-level declarative folders."""
    return project_root() / name
