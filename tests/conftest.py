"""Helpers shared by the tests of the deploy role's modules."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_module(name: str):
    """Import roles/deploy/library/<name>.py as a Python module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "roles" / "deploy" / "library" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
