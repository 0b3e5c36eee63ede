"""Experiment configs, shipped with the package: each module's ``get_config()`` returns an
``ml_collections.ConfigDict``.

``easgd-launch --config NAME`` (any folder, after ``pip install``) or
``python launch.py --config configs/NAME.py`` (the repository's ``configs/`` links here);
configs build on ``default.py`` and read tuned values from ``tuned.py``.
"""
