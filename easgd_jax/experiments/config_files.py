"""Config files: ``configs/NAME.py`` by name, or a path, read into an
``ml_collections.ConfigDict`` (``launch.py``, the sweep and its report read them alike)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import ml_collections

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"  # easgd_jax/configs


def config_file_path(name_or_path: str) -> tuple[pathlib.Path, str]:
    """``(absolute path, ARG)`` of ``configs/NAME.py`` (by name) or of a config file path,
    ``FILE:ARG`` split at the colon (ARG "" when absent); the file may not exist."""
    name, _, arg = str(name_or_path).partition(":")
    path = pathlib.Path(name)
    if not name.endswith(".py") and not path.exists():
        path = CONFIGS_DIR / f"{name}.py"
    return path.resolve(), arg


def load_config_file(name_or_path: str) -> ml_collections.ConfigDict:
    """``get_config()`` of ``configs/NAME.py`` (by name) or of a config file path;
    ``FILE:ARG`` calls ``get_config("ARG")``.

    The named configs ship inside the package (``easgd_jax/configs/``; ``configs/`` at the
    repository root links to it), so ``NAME`` works from any folder after ``pip install``.
    When the file is inside a package, the directory that holds the package is put on
    ``sys.path`` first, so that a config file of one's own can import its siblings.

    Raises FileNotFoundError for a missing file and ValueError for a file without
    ``get_config()`` or one that returns no ConfigDict; an error inside the file (a
    SyntaxError, a failed import) propagates as it is.
    """
    path, arg = config_file_path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {name_or_path!r} not found (looked at {path}).")
    root = path.parent
    while (root / "__init__.py").exists():  # up to the directory that holds the package
        root = root.parent
    if root != path.parent and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module_name = "easgd_config_" + "_".join(path.with_suffix("").parts[-2:])
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config file {path} defines no get_config() (a config file is a Python "
                         "file whose get_config() returns an ml_collections.ConfigDict).")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"get_config() of config file {path} returned {type(config).__name__}, "
                         "not an ml_collections.ConfigDict.")
    return config
