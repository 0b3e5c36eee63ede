"""What a sweep's report holds, as its sweep config declares it (``sweep.report``):

    report = {
        "grids": [{"name": GRID, "panels": "tau" | "p", "against": ["p", "tau"],
                   "by_period": bool, "plots": bool}, ...],
        "findings": {"tau_grid": GRID, "downpour_grid": GRID, "p_grid": GRID,
                     "long_tau_grid": GRID, "long_p_grid": GRID, "long_label": "2000 steps",
                     "comparisons": [[GRID, TITLE], ...]} | None,
        "speedup": {"grid": GRID, "fast": [METHOD, TAU], "slow": [METHOD, TAU]} | None,
        "ranking": {"grids": [GRID, ...], "pairs": [[METHOD, METHOD], ...]} | None,
    }

- ``grids``: per grid, the axis its curve panels are over (one panel per tau, or per p),
  the axes of its error / time to threshold figures (``GRID_error_vs_AXIS.png``), whether it
  gets the method x period tables (``GRID_by_period.md``) and figures at all. A grid or a
  field not declared is inferred from the runs (:func:`infer_grid`): panels per p when p
  varies among the grid's runs (p not fixed by the method), else per tau; figures against p
  when p varies, against tau when some method's period varies; the tables when the period
  varies.
- ``findings``: the grids the EASGD paper's findings are judged on
  (:mod:`easgd_jax.experiments.findings`; ``findings.md`` when the sweep has a row in
  ``tau_grid``), and the extra comparisons listed after them. None: no findings.
- ``speedup``: the grid and the two (method, tau) of ``speedup_cluster.md`` (when the runs
  record simulated cluster time and the grid has a row). None: no speed-up table.
- ``ranking``: the grids whose methods are ranked per panel, each tested against the
  panel's best, and the named pairs compared at every setting
  (:mod:`easgd_jax.experiments.ranking`, ``GRID_ranking.md``). None (the default): none.

A sweep config that declares no ``report`` (and a key it leaves out) gets the EASGD paper's
report (:data:`PAPER`): findings on the grids "tau", "p", "long_tau", "long_p" with the LSGD
and APAM comparisons, the speed-up of EAMSGD (tau = 10) over DOWNPOUR (tau = 1) on grid "p",
every grid inferred.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from easgd_jax.experiments.runs import RunResult

AXES = ("tau", "p")


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """One grid's tables and figures (None: inferred, :func:`infer_grid`)."""

    name: str
    panels: str | None = None  # "tau" or "p": one curve panel per value
    against: tuple[str, ...] | None = None  # the axes of the error / time figures
    by_period: bool | None = None  # the method x period tables
    plots: bool = True

    def __post_init__(self) -> None:
        for axis in ([self.panels] if self.panels else []) + list(self.against or ()):
            if axis not in AXES:
                raise ValueError(f"grid {self.name!r}: axis {axis!r} is not one of {AXES}.")


@dataclasses.dataclass(frozen=True)
class FindingsSpec:
    """The grids the paper's three findings are judged on: 1-3 on ``tau_grid`` (tau at p =
    4; finding 1 on ``downpour_grid`` when set), 3 on ``p_grid`` (p at tau = 10), 3 again
    on the long-run grids; then the extra comparisons (grid, title)."""

    tau_grid: str = "tau"
    downpour_grid: str | None = None  # finding 1's grid; None: tau_grid
    p_grid: str = "p"
    long_tau_grid: str = "long_tau"
    long_p_grid: str = "long_p"
    long_label: str = "2000 steps"
    comparisons: tuple[tuple[str, str], ...] = (
        ("lsgd", "LSGD against EASGD and EAMSGD (p = 4)"),
        ("apam", "APAM against synchronous AMSGrad (p = 4)"))


@dataclasses.dataclass(frozen=True)
class SpeedupSpec:
    """The speed-up on the simulated cluster of ``fast`` over ``slow`` (method, tau), per p
    of ``grid``."""

    grid: str = "p"
    fast: tuple[str, int] = ("eamsgd", 10)
    slow: tuple[str, int] = ("downpour", 1)


@dataclasses.dataclass(frozen=True)
class RankingSpec:
    """The grids ranked (:mod:`easgd_jax.experiments.ranking`) and the pairs (A, B) of
    methods compared at each of their settings."""

    grids: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"ranking pair {pair!r}: two different methods expected.")


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    """A sweep's report: its grids' tables and figures, its findings, its speed-up table."""

    grids: tuple[GridSpec, ...] = ()
    findings: FindingsSpec | None = FindingsSpec()
    speedup: SpeedupSpec | None = SpeedupSpec()
    ranking: RankingSpec | None = None

    def grid(self, name: str, runs: Sequence[RunResult],
             summary: Sequence[Mapping[str, Any]]) -> GridSpec:
        """Grid ``name``'s spec: the declared fields, the others inferred."""
        inferred = infer_grid(name, runs, summary)
        declared = next((g for g in self.grids if g.name == name), GridSpec(name))
        return GridSpec(
            name, panels=declared.panels or inferred.panels,
            against=inferred.against if declared.against is None else declared.against,
            by_period=(inferred.by_period if declared.by_period is None
                       else declared.by_period),
            plots=declared.plots)


PAPER = ReportSpec()
PAPER_FINDINGS = FindingsSpec()


def infer_grid(name: str, runs: Sequence[RunResult],
               summary: Sequence[Mapping[str, Any]]) -> GridSpec:
    """Grid ``name``'s spec from its runs and summary rows: panels per p when p varies (p
    not fixed by the method), else per tau; figures against p when p varies, against tau
    when some method's period varies; the method x period tables when the period varies."""
    ps = {r.num_workers for r in runs if name in r.grids and not r.fixed_workers}
    rows = [r for r in summary if r["grid"] == name]
    method_taus: dict[str, set] = {}
    for r in rows:
        method_taus.setdefault(r["method"], set()).add(r["tau"])
    varies = any(len(taus - {None}) > 1 for taus in method_taus.values())
    return GridSpec(name, panels="p" if len(ps) > 1 else "tau",
                    against=("p",) * (len(ps) > 1) + ("tau",) * varies,
                    by_period=len({r["tau"] for r in rows} - {None}) > 1)


def plain(value: Any) -> Any:
    """A ConfigDict (or FrozenConfigDict) as a dict, lists and tuples as lists, recursively."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _pairs(items: Any) -> tuple:
    return tuple(tuple(item) for item in items)


def _findings(section: Mapping[str, Any]) -> FindingsSpec:
    fields = dict(section)
    if "comparisons" in fields:
        fields["comparisons"] = _pairs(fields["comparisons"])
    return FindingsSpec(**fields)


def _speedup(section: Mapping[str, Any]) -> SpeedupSpec:
    return SpeedupSpec(**{k: tuple(v) if k in ("fast", "slow") else v
                          for k, v in section.items()})


def _grid(section: Mapping[str, Any]) -> GridSpec:
    fields = dict(section)
    if fields.get("against") is not None:
        fields["against"] = tuple(fields["against"])
    return GridSpec(**fields)


def report_spec(sweep: Any) -> ReportSpec:
    """The :class:`ReportSpec` a sweep config (a ConfigDict, or the dict of its sweep.json)
    declares in ``report``; :data:`PAPER` for what it leaves out."""
    section = plain(sweep.get("report") if sweep is not None else None)
    if section is None:
        return PAPER
    unknown = set(section) - {"grids", "findings", "speedup", "ranking"}
    if unknown:
        raise ValueError(f"sweep.report: unknown keys {sorted(unknown)}; it may declare "
                         "grids, findings, speedup and ranking.")
    spec = PAPER
    if "grids" in section:
        spec = dataclasses.replace(spec, grids=tuple(_grid(g) for g in section["grids"]))
    if "findings" in section:
        spec = dataclasses.replace(spec, findings=None if section["findings"] is None
                                   else _findings(section["findings"]))
    if "speedup" in section:
        spec = dataclasses.replace(spec, speedup=None if section["speedup"] is None
                                   else _speedup(section["speedup"]))
    if section.get("ranking") is not None:
        ranking = section["ranking"]
        spec = dataclasses.replace(spec, ranking=RankingSpec(
            grids=tuple(ranking.get("grids", ())), pairs=_pairs(ranking.get("pairs", ()))))
    return spec
