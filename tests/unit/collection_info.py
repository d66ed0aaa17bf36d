"""The collection's own metadata, in a checkout (galaxy.yml) and where it is installed
(MANIFEST.json: ansible-galaxy keeps no galaxy.yml), for the unit tests that read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def collection_info() -> dict[str, Any]:
    """namespace, name, version, license... as galaxy.yml states them."""
    galaxy = ROOT / "galaxy.yml"
    if galaxy.is_file():
        return yaml.safe_load(galaxy.read_text())
    return json.loads((ROOT / "MANIFEST.json").read_text())["collection_info"]
