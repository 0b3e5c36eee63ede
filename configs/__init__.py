"""Experiment configs: each module's ``get_config()`` returns an ml_collections.ConfigDict.

``python launch.py --config configs/NAME.py``; configs build on ``configs/default.py``.
"""
