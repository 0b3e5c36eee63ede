"""Sphinx configuration of the easgd-jax documentation site.

Build it (CI does, with warnings as errors and nitpicky cross-references):

    sphinx-build -W -n --keep-going -b html docs docs/_build/html

Pages are MyST Markdown; the user guide includes the README's sections (one source), the API
reference is generated from the docstrings (autodoc + autosummary, Google-style sections
through napoleon), and ``notebooks/eamsgd_vs_diloco.md`` is a MyST-NB notebook executed during
the build on simulated CPU devices.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.transforms import SphinxTransform
from sphinx.util.docutils import SphinxDirective

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout's easgd_jax and analysis, installed or not

project = "easgd-jax"
author = "easgd-jax contributors"
copyright = "2026, easgd-jax contributors"  # noqa: A001 (Sphinx's name)
release = "0.1.0"

extensions = [
    "myst_nb",  # MyST Markdown pages and executed notebooks (it loads myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# .rst first: autosummary writes its generated stubs with the first suffix (they are reST).
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
# Data folders of the results pages (CSV tables, figures, probe scripts) are not pages: the
# pages link or embed what they need.
exclude_patterns = [
    "_build",
    "probes",
    "mnist1d_paper",
    "local_sgd",
    "contested",
    "paper_async",
    "lm_compare",
    "Thumbs.db",
    ".DS_Store",
]

html_theme = "furo"
html_title = "easgd-jax"
html_static_path: list[str] = []

# --- MyST ---------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3  # GitHub-style anchors: README links such as RESULTS.md#beyond-...

# --- the notebook -------------------------------------------------------------------------
nb_execution_mode = "force"  # run on every build: the figure is the code's, not a stored one
nb_execution_timeout = 300
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True

# --- API reference ------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
autodoc_preserve_defaults = True
# Annotations as written (the modules use postponed annotations): optax's learning-rate
# alias stays one name instead of its expanded union, and AxisName links to its entry.
# (Only names that are not nested in another annotation: Sphinx 8 renders an alias inside
# tuple[...] as TypeAliasForwardRef.)
autodoc_type_aliases = {
    "optax.ScalarOrSchedule": "optax.ScalarOrSchedule",
    "AxisName": "easgd_jax.algorithms.AxisName",
    "base.AxisName": "easgd_jax.algorithms.AxisName",
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# --- nitpicky cross-references ------------------------------------------------------------
# No intersphinx (the build has no internet): names of Python itself and of third-party
# packages cannot be resolved and are ignored here, by package. Every reference into
# easgd_jax or analysis must resolve (see _resolve_internal below).
_EXTERNAL = (
    r"jax|jaxlib|jnp|np|numpy|optax|flax|nnx|orbax|ocp|ml_collections|absl|scipy|matplotlib"
    r"|plt|ray|tensorflow_datasets|tfds|chex|etils|tensorboardX"
)
_BUILTINS = (
    r"int|float|bool|str|bytes|complex|object|type|None|NoneType|Ellipsis|tuple|list|dict"
    r"|set|frozenset|slice|range|callable|iterable|optional"
    r"|[A-Z][A-Za-z]*(Error|Exception|Warning)|KeyboardInterrupt|StopIteration"
)
_STDLIB = (
    r"typing|collections|collections\.abc|abc|threading|queue|concurrent|concurrent\.futures"
    r"|os|pathlib|enum|dataclasses|functools|types|logging|subprocess|multiprocessing|io"
    r"|numbers|contextlib|signal|socket"
)
_TYPING = (
    r"Any|Callable|Iterable|Iterator|Generator|Mapping|MutableMapping|Sequence|Hashable"
    r"|NamedTuple|Optional|Union|Literal|Generic|TypeVar|Protocol|Self|ParamSpec|Concatenate"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_EXTERNAL})(\..*)?"),
    (r"py:.*", rf"({_BUILTINS})"),
    (r"py:.*", rf"({_STDLIB})\..*"),
    (r"py:.*", rf"({_TYPING})"),
    # Generic parameters of the typed states (base.Extra, a TypeVar) and annotation
    # fragments that are not names.
    (r"py:.*", r"(easgd_jax\.algorithms\.base\.)?(Extra|T|P|R)"),
]

# The modules whose public names the API reference documents, in the order in which a
# reference by defining module (easgd_jax.algorithms.elastic.ElasticAveragingState, as
# annotations and :class: roles name it) is sent to the page of its public name.
PUBLIC_MODULES = (
    "easgd_jax",
    "easgd_jax.algorithms",
    "easgd_jax.parallel",
    "easgd_jax.training",
    "easgd_jax.training.config",
    "easgd_jax.models",
    "easgd_jax.data",
    "analysis",
)
_OURS = re.compile(r"^(easgd_jax|analysis)(\.|$)")


def _import_path(path: str) -> tuple[Any, str] | None:
    """The object at dotted ``path`` (a module, or attributes of one) and the module it was
    found in; None when nothing is there."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        if not _OURS.match(module_name):
            return None
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj, module_name
    return None


def _candidates(node: pending_xref) -> list[str]:
    """The full names a Python reference can mean, as Sphinx's own lookup tries them: as
    written, in the current class, in the current module and its parent packages."""
    # A role broken over two lines of a docstring holds the line break in its target.
    target = re.sub(r"\s+", "", node["reftarget"]).lstrip("~")
    module, cls = node.get("py:module") or "", node.get("py:class") or ""
    # The docstring's own object ("...:docstring of easgd_jax.algorithms.base.Spec"): its
    # defining module is where a bare name in it is defined, whatever page documents it.
    source, parent = node.source, node.parent
    while source is None and parent is not None:  # signature nodes carry it on a parent
        source, parent = parent.source, parent.parent
    documented = re.search(r"docstring of ([\w.]+)", source or "")
    contexts = []
    if documented:
        path = documented.group(1)
        while "." in path:
            contexts.append(path)
            path = path.rsplit(".", 1)[0]
    if target.startswith("."):
        relative = target.lstrip(".")
        names = [f"{module}.{cls}.{relative}", f"{module}.{relative}"]
        package = module
        while "." in package:
            package = package.rsplit(".", 1)[0]
            names.append(f"{package}.{relative}")
        return names + [f"{context}.{relative}" for context in contexts]
    names = [target]
    if module:
        names[:0] = ([f"{module}.{cls}.{target}"] if cls else []) + [f"{module}.{target}"]
    return names + [f"{context}.{target}" for context in contexts]


def _resolve_internal(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolves a Python reference to an object of easgd_jax or analysis that Sphinx's own
    lookup missed, only if the object exists (it is imported to check):

    1. by the public name under which the API reference documents the same object (the
       pages document ``easgd_jax.eamsgd``, ``easgd_jax.parallel.make_round``; annotations
       and docstrings name the defining module, ``easgd_jax.algorithms.elastic.eamsgd``);
    2. an attribute of a documented class (``Spec.period``): that class's entry;
    3. any other object (a helper that is not a public name, a type alias): the page of the
       module that defines it (api/modules documents every module).

    A reference to a name that does not exist stays unresolved, and ``-n -W`` fails the
    build on it.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    objects = domain.objects  # type: ignore[attr-defined]
    for name in _candidates(node):
        found = _import_path(name)
        if found is None:
            continue
        obj, module_name = found
        short = name.rsplit(".", 1)[-1]
        for public in PUBLIC_MODULES:
            candidate = f"{public}.{short}"
            if candidate in objects and (_import_path(candidate) or (None,))[0] is obj:
                return domain.resolve_xref(env, node["refdoc"], app.builder, "obj",
                                           candidate, node, contnode)
        owner = name.rsplit(".", 1)[0]
        owner_found = _import_path(owner)
        if owner_found is not None and isinstance(owner_found[0], type):
            for public in PUBLIC_MODULES:
                candidate = f"{public}.{owner.rsplit('.', 1)[-1]}"
                if candidate in objects and (_import_path(candidate) or (None,))[0] is \
                        owner_found[0]:
                    return domain.resolve_xref(env, node["refdoc"], app.builder, "obj",
                                               candidate, node, contnode)
        defining = getattr(obj, "__name__", None) if inspect.ismodule(obj) else None
        if defining is None:
            defining = getattr(obj, "__module__", None)
            if not (isinstance(defining, str) and _OURS.match(defining)):
                defining = module_name
        if defining in objects:
            return domain.resolve_xref(env, node["refdoc"], app.builder, "mod", defining,
                                       node, contnode)
    return _resolve_bare_name(app, env, node, contnode)


def _resolve_bare_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """A bare name with no module to read it in (an autosummary row's summary line): the one
    documented object of that name, else the one module of ours that defines it."""
    name = re.sub(r"\s+", "", node["reftarget"]).lstrip("~.")
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        return None
    domain = env.get_domain("py")
    objects = domain.objects  # type: ignore[attr-defined]
    documented = {full: _import_path(full) for full in objects
                  if _OURS.match(full) and full.endswith(f".{name}")}
    distinct = {id(found[0]): full for full, found in sorted(documented.items()) if found}
    if len(distinct) == 1:
        (full,) = distinct.values()
        return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", full, node,
                                   contnode)
    defining = {module_name for module_name, module in list(sys.modules.items())
                if _OURS.match(module_name) and module_name in objects
                and getattr(getattr(module, name, None), "__module__", None) == module_name}
    if len(defining) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, "mod", defining.pop(),
                                   node, contnode)
    return None


class ModuleDocstring(SphinxDirective):
    """``.. module-docstring:: NAME``: declares the module NAME (a target for ``:mod:``
    references and for the helpers it defines) and shows its docstring as written, a
    preformatted block: the modules' docstrings are plain text with aligned formulas."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """The module's target and its docstring."""
        name = self.arguments[0]
        module = importlib.import_module(name)
        self.env.note_dependency(module.__file__ or "")
        domain = self.env.get_domain("py")
        node_id = f"module-{name}"
        section_target = nodes.target("", "", ids=[node_id], ismod=True)
        self.state.document.note_explicit_target(section_target)
        domain.note_module(name, node_id, "", "", False)  # type: ignore[attr-defined]
        domain.note_object(name, "module", node_id,  # type: ignore[attr-defined]
                           location=section_target)
        text = inspect.getdoc(module) or "(no docstring)"
        block = nodes.literal_block(text, text)
        block["language"] = "none"
        return [section_target, block]


class RepositoryLinks(SphinxTransform):
    """Links from the Markdown pages to files of the repository that are not pages (a
    script in examples/, a CSV table of results, an excluded summary.md) become downloads
    of that file, as MyST makes a link to a file next to the page; a link to a folder of
    data (docs/probes/, docs/mnist1d_paper/) keeps its text, unlinked: the site does not
    publish folders. A link to a path that does not exist is left to MyST, which warns.

    Runs at read time, before Sphinx collects the downloads of each page.
    """

    default_priority = 880

    def apply(self, **kwargs: Any) -> None:
        """Rewrites the page's unresolvable MyST links to existing repository paths."""
        docdir = os.path.dirname(self.env.doc2path(self.env.docname))
        for node in list(self.document.findall(pending_xref)):
            if node.get("reftype") != "myst":
                continue
            if node.get("refdomain") == "doc":
                docname = node["reftarget"]
                if docname in self.env.found_docs:
                    continue
                target = os.path.join(self.env.srcdir, docname) + ".md"
            else:
                target = node["reftarget"]
                if "://" in target or target.startswith("#"):
                    continue
                target = os.path.join(docdir, target.split("#")[0])
            path = next((c for c in (target, os.path.join(ROOT, os.path.relpath(target, docdir)))
                         if os.path.exists(c)), None)
            if path is None or os.path.commonpath([ROOT, os.path.abspath(path)]) != ROOT:
                continue
            text = node.astext()
            if os.path.isdir(path):
                node.replace_self(nodes.literal(text, text))
                continue
            download = addnodes.download_reference(
                "", "", reftarget=os.path.relpath(path, docdir), refdoc=self.env.docname,
                refdomain="", reftype="download", refexplicit=True)
            download += nodes.literal(text, text)
            node.replace_self(download)


def formulas_as_written(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Shows a docstring's indented blocks (its formulas, aligned in plain text) as written:
    a lone ``::`` before each, which reST drops, makes the block a literal block instead of
    a quotation whose lines run together. Runs after napoleon has turned the Google-style
    sections into fields."""
    result: list[str] = []
    in_block = False
    for i, line in enumerate(lines):
        indented = line.startswith("    ") and line.strip() != ""
        starts = (indented and not in_block and i > 0 and lines[i - 1].strip() == ""
                  and not line.lstrip().startswith((":", "..", "- ", "* ", ">>>")))
        if starts:
            previous = next((x for x in reversed(lines[:i]) if x.strip()), "")
            if (not previous.startswith(" ") and not previous.rstrip().endswith("::")
                    and not previous.lstrip().startswith((":", ".."))):
                result.extend(["::", ""])
        if line.strip():
            in_block = indented if (starts or in_block) else False
        result.append(line)
    lines[:] = result


def setup(app: Sphinx) -> dict[str, Any]:
    """Registers the resolver of references to internal names."""
    app.connect("missing-reference", _resolve_internal)
    app.add_transform(RepositoryLinks)
    app.add_directive("module-docstring", ModuleDocstring)
    app.connect("autodoc-process-docstring", formulas_as_written, priority=600)
    return {"parallel_read_safe": True}
