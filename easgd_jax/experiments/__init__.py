"""Experiments over many runs: the sweep runner (``sweep``), its report and the EASGD
paper's findings checked on the runs."""
