"""docs/ablate.schema.json: a valid JSON Schema that accepts results.json as ablate writes it and refuses what it is
not (a field of another type, an unknown status or verdict, a missing field)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests._util import REPO
from tests.experiments._results import results

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((REPO / "docs" / "ablate.schema.json").read_text(encoding="utf-8"))


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("case", ["complete", "partial", "one seed"])
def test_results_validate(case: str) -> None:
    document = json.loads(json.dumps(results(case), allow_nan=False))  # as written: strict JSON
    assert _errors(document) == []


@pytest.mark.parametrize(("change", "where"), [
    (lambda d: d["arms"][1].update(verdict="maybe"), "arms/1/verdict"),
    (lambda d: d["arms"][1]["trials"][0].update(status="running"), "arms/1/trials/0/status"),
    (lambda d: d["arms"][0].update(kind="reference"), "arms/0/kind"),
    (lambda d: d["arms"][1]["vs_baseline"].update(ci95=[0.1]), "arms/1/vs_baseline"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.pop("metric"), ""),
    (lambda d: d["arms"][2].update(extra=1), "arms/2"),
])
def test_what_is_not_results_is_refused(change: Any, where: str) -> None:
    document = results("complete")
    change(document)
    assert any(error.startswith(f"{where}:") for error in _errors(document)), _errors(document)
