"""The option values the command line writes as text, and what the options refuse."""

from __future__ import annotations

import pytest

from surgeon.errors import SurgeonError
from surgeon.experiments import AblateOptions, Execution, parse_seeds, parse_train_args
from surgeon.experiments.plan import check_trainer_spec

SEEDS = [("3", (0, 1, 2)), ("1", (0,)), ("0,7,42", (0, 7, 42)), ("5,", (5,)), (" 2 , 9", (2, 9))]


@pytest.mark.parametrize(("text", "seeds"), SEEDS)
def test_seeds(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(("text", "message"), [("0", "a count must be at least 1"), ("a,b", "expected a count"),
                                               ("", "expected a count"), ("1,1", "seeds repeat")])
def test_bad_seeds(text: str, message: str) -> None:
    with pytest.raises(SurgeonError, match=message):
        parse_seeds(text)


def test_train_args_in_yolo_form() -> None:
    assert parse_train_args(["data=coco8.yaml epochs=3", "imgsz=640 name='my run'"]) == {
        "data": "coco8.yaml", "epochs": "3", "imgsz": "640", "name": "my run"}
    with pytest.raises(SurgeonError, match="expected key=value as `yolo train` takes it, got 'epochs'"):
        parse_train_args(["epochs"])
    with pytest.raises(SurgeonError, match="epochs is given twice"):
        parse_train_args(["epochs=3", "epochs=4"])


@pytest.mark.parametrize("spec", ["ultralytics", "my_pkg.train:fit", "train:fit"])
def test_trainer_specs(spec: str) -> None:
    check_trainer_spec(spec)


@pytest.mark.parametrize("spec", ["my_pkg.train", "my_pkg.train:", "train:fit()", "my-pkg:fit", "yolo"])
def test_bad_trainer_specs(spec: str) -> None:
    with pytest.raises(SurgeonError, match="expected package.module:function"):
        check_trainer_spec(spec)


def test_options_refuse_what_cannot_run(tmp_path) -> None:
    with pytest.raises(SurgeonError, match="at least one seed"):
        AblateOptions(tmp_path, seeds=())
    with pytest.raises(SurgeonError, match="mode must be max or min"):
        AblateOptions(tmp_path, mode="up")  # type: ignore[arg-type]
    with pytest.raises(SurgeonError, match="unknown executor 'slurm'"):
        Execution("slurm")  # type: ignore[arg-type]
    with pytest.raises(SurgeonError, match="cpus per trial must be at least 1"):
        Execution(cpus_per_trial=0)


def test_a_module_is_refused_with_what_to_pass(tmp_path) -> None:
    from torch import nn

    from surgeon.experiments import ablate

    with pytest.raises(SurgeonError, match="takes a spec or a checkpoint path, not a Linear"):
        ablate(nn.Linear(2, 2), AblateOptions(tmp_path / "exp"))  # type: ignore[arg-type]
