"""Adapters to other frameworks' files and trainers; each uses the public pipeline only.

Importing this package registers each framework's specs and native checkpoint files with :mod:`surgeon.checkpoint`
and imports no framework: a framework is imported only when one of its specs, files or models is met.
"""

from __future__ import annotations

from . import ultralytics

__all__ = ["ultralytics"]

ultralytics.register()
