"""Adapters to other frameworks: one :class:`~surgeon.io.FrameworkAdapter` per framework, each package with the same
skeleton (``adapter``, ``models``, ``files``, ``training``, ``reporting``).

Importing this package registers each adapter in :mod:`surgeon.io.registry` and imports no framework: a framework
is imported only when one of its specs, files, directories or models is met. The adapters sit below the pipeline:
what they need of it (the one replay path, for a training hook) is handed to them.
"""

from __future__ import annotations

from . import transformers, ultralytics

__all__ = ["transformers", "ultralytics"]

transformers.register()
ultralytics.register()
