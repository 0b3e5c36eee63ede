"""Docstrings print as written: a shell command broken over lines with a trailing backslash
(``python launch.py ... \\`` then the rest) stays two lines in ``--help`` and the API pages.
In a plain (non-raw) docstring Python reads that backslash as a line continuation and joins
the lines with a run of spaces (the sweep's ``--help`` showed ``--workdir /tmp/sweep
--dry_run`` so); such a docstring must be raw (``r\"\"\"``) or write the backslash as ``\\\\``."""

from __future__ import annotations

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDERS = ("easgd_jax", "benchmarks", "analysis")


def _python_files() -> list[str]:
    files = [os.path.join(ROOT, "launch.py")]
    for folder in FOLDERS:
        for where, _, names in os.walk(os.path.join(ROOT, folder)):
            files += [os.path.join(where, n) for n in names if n.endswith(".py")]
    return sorted(files)


def joined_lines(source: str) -> list[int]:
    """The line numbers of the docstrings in ``source`` (module, class, function) that are
    not raw and hold a backslash-newline (an odd run of backslashes before a line's end)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
            continue
        body = node.body
        if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            continue
        text = ast.get_source_segment(source, body[0].value) or ""
        if text.lstrip()[:1] in "rR":
            continue
        if any(len(m.group(1)) % 2 for m in re.finditer(r"(\\+)\n", text)):
            found.append(body[0].value.lineno)
    return found


def test_the_check_finds_a_joined_command_and_passes_a_raw_or_escaped_one():
    plain = '"""Run:\n\n    python launch.py --config X \\\n        --workdir D\n"""\n'
    assert joined_lines(plain) == [1]
    assert joined_lines("r" + plain) == []
    assert joined_lines(plain.replace("\\\n", "\\\\\n")) == []
    assert joined_lines('def f():\n    ' + plain.replace("\n", "\n    ") + "pass\n") == [2]


def test_no_docstring_joins_a_commands_lines():
    found = {}
    for path in _python_files():
        with open(path, encoding="utf-8") as f:
            lines = joined_lines(f.read())
        if lines:
            found[os.path.relpath(path, ROOT)] = lines
    assert len(_python_files()) > 100  # (the walk reached the package)
    assert found == {}
