"""The paper's figures as mended in issue 31, item 5 (matplotlib only, no jax):

- ``sync_variance.png`` without Monte Carlo is one panel whose legend lists only what is
  drawn (it used to keep an empty "Monte Carlo skipped" panel and the Monte-Carlo marker in
  the legend);
- ``easgd_radius.png``'s colour bar names the black level-1 line only where it is drawn
  (EASGD's radius is below 1 on the whole grid, so no line is).
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis import plots, roundrobin, synchronous


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """The figures the plot functions make, kept open instead of saved."""
    made = []

    def keep(fig, path):
        made.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield made
    for fig in made:
        plots.plt.close(fig)


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def test_variance_figure_without_monte_carlo_is_one_panel_with_an_honest_legend(figures):
    betas = np.linspace(0.1, 1.5, 8)
    closed = {p: synchronous.center_variance(0.1, betas, p) for p in (1, 4)}
    plots.plot_variance_check(betas, closed, betas, closed, [], 0.1, 1.0, "unused.png")
    (fig,) = figures
    assert len(fig.axes) == 1
    texts = _legend_texts(fig)
    assert "scipy solve_discrete_lyapunov" in texts
    assert not [t for t in texts if "Monte Carlo" in t]


def test_radius_colour_bar_names_the_level_one_line_only_where_it_is_drawn(figures):
    maps = {p: roundrobin.radius_map("easgd", p, 12) for p in (3,)}  # all < 1
    maps_admm = {p: roundrobin.radius_map("admm", p, 12) for p in (8,)}  # crosses 1
    plots.plot_radius_maps(maps, "easgd", "unused.png")
    plots.plot_radius_maps(maps_admm, "admm", "unused.png")
    easgd, admm = ([ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
                   for fig in figures)
    assert easgd == ["spectral radius of one cycle map (all < 1: stable on the whole grid)"]
    assert admm == ["spectral radius of one cycle map (black line: 1)"]
    drawn = [len(ax.collections) for fig in figures for ax in fig.axes
             if ax.get_label() != "<colorbar>"]
    assert drawn == [0, 1]  # the contour of level 1: none for EASGD, one for ADMM
