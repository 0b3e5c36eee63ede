"""The command line of the experiment modules (the sweep, its report): each keeps its flags on
a ``flags.FlagValues`` of its own, so that importing it defines nothing in absl's global
FLAGS (which ``launch.py``'s ``--config`` owns) and its ``main`` runs after a plain import."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app, flags

HELP = ("-h", "-help", "--help", "-?", "--helpshort")


def run(main: Callable[[list[str]], None], flag_values: flags.FlagValues, doc: str) -> None:
    """Parses ``flag_values`` from ``sys.argv``, then absl's own flags (``--verbosity``), and
    runs ``main`` under ``absl.app``. ``--help`` prints ``doc`` and the module's flags (absl's
    help would list none of them); a bad or missing flag is one line and exit status 2."""

    def parse(argv: list[str]) -> list[str]:
        if any(arg in HELP for arg in argv[1:]):
            print(f"{doc}\nflags:\n{flag_values.get_help()}")
            sys.exit(0)
        try:
            return flags.FLAGS(flag_values(argv, known_only=True))
        except flags.Error as e:
            print(f"{os.path.basename(argv[0])}: error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(main, flags_parser=parse)
