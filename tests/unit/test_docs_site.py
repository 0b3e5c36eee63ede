"""The documentation site's sources are complete: the API reference lists every public name,
every page of docs/ is in a toctree, and the README markers the guide includes exist once.

The build itself (``sphinx-build -W -n``, notebook executed) runs in CI after the tests
(.ci/run); these checks are quick and catch the usual drift: a name added to ``__all__``
without an entry, a README heading renamed under an include, a page left out.
"""

import os
import re

import pytest

import analysis
import easgd_jax
import easgd_jax.parallel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")


def _read(*parts: str) -> str:
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return f.read()


def _documented(page: str) -> set[str]:
    """The names an API page's autosummary tables list, and those it declares by hand."""
    text = _read(DOCS, "api", page)
    return set(re.findall(r"^   ([A-Za-z_]\w*)$", text, flags=re.M)) | \
        set(re.findall(r"^\.\. py:data:: ([A-Za-z_]\w*)$", text, flags=re.M))


@pytest.mark.parametrize(("module", "page"), [
    (easgd_jax, "easgd_jax.rst"),
    (easgd_jax.parallel, "parallel.rst"),
    (analysis, "analysis.rst"),
])
def test_every_public_name_has_an_api_entry(module, page):
    missing = sorted(set(module.__all__) - _documented(page))
    assert not missing, f"{module.__name__}.__all__ names missing from docs/api/{page}: {missing}"


def test_the_subpackage_pages_list_only_existing_names():
    import easgd_jax.algorithms as algorithms

    listed = _documented("algorithms.rst")
    assert listed <= set(algorithms.__all__) - set(easgd_jax.__all__)


def _toctree_entries() -> set[str]:
    entries = set()
    for folder, _, files in os.walk(DOCS):
        if "_build" in folder:
            continue
        for name in files:
            if name.endswith(".md"):
                text = _read(folder, name)
                for block in re.findall(r"```\{toctree\}\n(.*?)```", text, flags=re.S):
                    for line in block.splitlines():
                        if line and not line.startswith(":"):
                            base = os.path.relpath(folder, DOCS)
                            path = line.lstrip("/") if line.startswith("/") else \
                                os.path.normpath(os.path.join(base, line))
                            entries.add(path)
    return entries


def test_every_page_is_in_a_toctree():
    pages = {os.path.splitext(name)[0] for name in os.listdir(DOCS) if name.endswith(".md")}
    pages.discard("index")
    missing = sorted(pages - _toctree_entries())
    assert not missing, f"docs/*.md pages in no toctree: {missing}"
    assert {"RESULTS", "default_runs", "adding_an_algorithm", "fault_and_api_checks",
            "changelog"} <= _toctree_entries()


def test_included_readme_markers_exist_once():
    readme = _read(ROOT, "README.md")
    markers = []
    for folder, _, files in os.walk(DOCS):
        for name in files:
            if name.endswith(".md") and "_build" not in folder:
                markers += re.findall(r':(?:start-after|end-before): "(.*)"', _read(folder, name))
    assert len(markers) >= 10
    for marker in markers:
        assert readme.count(marker) == 1, f"README.md holds {marker!r} {readme.count(marker)}x"


def test_ci_builds_the_docs_with_warnings_as_errors():
    ci = _read(ROOT, ".ci", "run")
    assert re.search(r"pip install .*\.\[test,docs\]", ci)
    assert "sphinx-build -W -n --keep-going -b html docs docs/_build/html" in ci
    assert '"docs": [' in _read(ROOT, "setup.py")
