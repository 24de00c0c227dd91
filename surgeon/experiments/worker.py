"""The process of one local trial: ``python -m surgeon.experiments.worker SPEC.json OUTDIR``.

It reads a :class:`~surgeon.experiments.trial.TrialSpec`, runs it, and writes the record to ``OUTDIR/record.json``
(and the trained model to ``OUTDIR/model.pt``): a scratch directory of the driver, never the store, which the driver
alone writes. What the trial prints goes to this process's stdout and stderr, which the driver keeps as its log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .trial import MODEL_FILE, RECORD_FILE, TrialSpec, run_trial


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m surgeon.experiments.worker SPEC.json OUTDIR", file=sys.stderr)
        return 2
    spec_path, out = Path(argv[0]), Path(argv[1])
    spec = TrialSpec(**json.loads(spec_path.read_text(encoding="utf-8")))
    record = run_trial(spec)
    if record.model is not None:
        (out / MODEL_FILE).write_bytes(record.model)
    (out / RECORD_FILE).write_text(json.dumps({**record.summary(), "curves": record.curves}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
