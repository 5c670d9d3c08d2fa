"""The project's top-level packages leave the installed ones alone."""

import importlib
import site
import sys
from pathlib import Path

from django.conf import settings


def test_no_project_package_shadows_an_installed_one() -> None:
    root = Path(settings.BASE_DIR)
    ours = {path.name for path in root.iterdir() if (path / "__init__.py").is_file()}
    ours |= {path.stem for path in root.glob("*.py")}
    installed = [Path(entry) for entry in [*site.getsitepackages(), *sys.path] if "-packages" in entry]

    shadowed = {
        name for name in ours for place in installed if (place / name).is_dir() or (place / f"{name}.py").is_file()
    }

    assert shadowed == set()


def test_the_mcp_package_the_sdk_imports_is_whole() -> None:
    mcp = importlib.import_module("mcp")

    assert hasattr(mcp, "ClientSession")
    assert Path(mcp.__file__).parent.parent.name in ("site-packages", "dist-packages")
