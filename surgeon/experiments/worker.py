"""The process of one trial: ``python -m surgeon.experiments.worker SPEC.json OUTDIR PARENT_PID``.

It reads a :class:`~surgeon.experiments.trial.TrialSpec`, runs it, and writes the record to ``OUTDIR/record.json``
(and the trained model to ``OUTDIR/model.pt``): a scratch directory of the driver, never the store, which the driver
alone writes. What the trial prints goes to this process's stdout and stderr, which the driver keeps as its log.

A trial whose parent is gone (the driver killed, or the Ray worker that started it) has nobody to hand its record
to: it stops within a second instead of training on, unaccounted, on the machine (POSIX: the parent's death shows as
a new parent process id). The parent passes its process id on the command line: read here, after the imports, the
parent could already be gone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from .trial import MODEL_FILE, RECORD_FILE, TrialSpec, run_trial

ORPHANED = 3
"""The exit status of a trial stopped because its parent died."""


def exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """Wait while ``parent`` is this process's parent, then end the process at once with :data:`ORPHANED`."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(ORPHANED)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: python -m surgeon.experiments.worker SPEC.json OUTDIR PARENT_PID", file=sys.stderr)
        return 2
    spec_path, out, parent = Path(argv[0]), Path(argv[1]), int(argv[2])
    threading.Thread(target=exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True).start()
    spec = TrialSpec(**json.loads(spec_path.read_text(encoding="utf-8")))
    record = run_trial(spec)
    if record.model is not None:
        (out / MODEL_FILE).write_bytes(record.model)
    (out / RECORD_FILE).write_text(json.dumps({**record.summary(), "curves": record.curves}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
