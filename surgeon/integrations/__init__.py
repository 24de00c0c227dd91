"""Adapters to other frameworks' files and trainers; each uses the public pipeline only.

Importing this package registers each framework's specs, model files and directories and models with the leaf
registry :mod:`surgeon.frameworks` (and its model hooks with :mod:`surgeon.pipeline`), and imports no framework: a
framework is imported only when one of its specs, files, directories or models is met.
"""

from __future__ import annotations

from . import transformers, ultralytics

__all__ = ["transformers", "ultralytics"]

transformers.register()
ultralytics.register()
