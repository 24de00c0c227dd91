"""Adapters to other frameworks' files and trainers; each uses the public pipeline only.

Importing this package registers each framework's specs, model directories and models with
:mod:`surgeon.checkpoint` and :mod:`surgeon.pipeline`, and imports no framework: a framework is imported only when
one of its specs, directories or models is met.
"""

from __future__ import annotations

from . import transformers

__all__ = ["transformers"]

transformers.register()
