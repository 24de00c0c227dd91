"""Hostile and broken inputs through the command line (issue 9): each is refused with exit 1 (2 for bad usage) and
one line on stderr naming the problem and the remedy; no traceback, no partial output, the input untouched, and no
code from a rules file, a checkpoint or its recipe runs unless the user trusts it on the command line."""

from __future__ import annotations

import errno
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
import torchvision

import surgeon
from surgeon.blocks import get_block, list_blocks
from surgeon.errors import ModelLoadError
from surgeon.rules import MAX_BYTES
from tests._util import file_digest
from tests._util import run_cli as run
from tests.fixtures.hostile.rule_files import GOOD, RULE_FILES, USER_BLOCK

SMALL = ("--input-shape", "1,3,64,64", "--profile", "off")
FIXTURES = "tests.fixtures.hostile.models"


def assert_refused(result, phrase: str, code: int = 1) -> None:
    """Exit ``code``, one line on stderr holding ``phrase``, nothing on stdout, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert phrase in result.stderr, result.stderr


def assert_nothing_written(directory: Path, before: set[str]) -> None:
    """No new file at all in ``directory``: no output, no report, no ``.*.tmp`` left by an interrupted write."""
    assert {p.name for p in directory.iterdir()} == before


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "r18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


# ------------------------------------------------------------------------------------------------ rules files


@pytest.mark.parametrize("case", list(RULE_FILES))
def test_rules_file_refused(case: str, workdir: Path) -> None:
    content, phrase = RULE_FILES[case]
    marker = workdir / "MARKER"
    if callable(content):
        content = content(marker)
    rules = workdir / "rules.yaml"
    rules.write_bytes(content if isinstance(content, bytes) else content.encode())
    digest, before = file_digest(rules), {p.name for p in workdir.iterdir()}
    result = run("apply", "torchvision:resnet18", rules, "-o", workdir / "out.pt", *SMALL)
    assert_refused(result, phrase)
    assert result.stderr.startswith(f"error: {rules}:"), "the error is located in the file"
    assert_nothing_written(workdir, before)
    assert file_digest(rules) == digest and not marker.exists()


def test_huge_rules_file_is_refused_before_parsing(workdir: Path) -> None:
    rules = workdir / "huge.yaml"
    rules.write_text(GOOD + "# padding padding padding\n" * (MAX_BYTES // 26 + 1))
    before = {p.name for p in workdir.iterdir()}
    assert_refused(run("apply", "torchvision:resnet18", rules, "-o", workdir / "out.pt", *SMALL), "file too large")
    assert_nothing_written(workdir, before)


@pytest.mark.parametrize(("kind", "phrase"), [
    ("missing", "nowhere.yaml:1:1: no such rules file or preset; presets: "),
    ("directory", "is a directory; give a rules file (.yaml) or a preset name"),
])
def test_rules_path_missing_or_a_directory(kind: str, phrase: str, workdir: Path) -> None:
    path = workdir / "nowhere.yaml" if kind == "missing" else workdir / "rules.d"
    if kind == "directory":
        path.mkdir()
    before = {p.name for p in workdir.iterdir()}
    assert_refused(run("apply", "torchvision:resnet18", path, "-o", workdir / "out.pt", *SMALL), phrase)
    assert_nothing_written(workdir, before)


# ------------------------------------------------------------------------------------------------ block options

OPTIONS = {
    "ratio-zero": (("--block", "se", "--set", "rd_ratio=0"), "rd_ratio must be > 0, got 0"),
    "ratio-negative": (("--block", "se", "--set", "rd_ratio=-1"), "rd_ratio must be > 0, got -1"),
    "gc-ratio-zero": (("--block", "gc", "--set", "rd_ratio=0"), "rd_ratio must be > 0, got 0"),
    "kernel-zero": (("--block", "eca", "--set", "k_size=0"), "k_size must be a positive odd integer, got 0"),
    "wrong-type": (("--block", "se", "--set", "rd_ratio=abc"), "expects float, got str 'abc'"),
    "unknown-option": (("--block", "se", "--set", "nosuch=1"), "has no option 'nosuch'; valid options:"),
    "unknown-block": (("--block", "ecaa",), "unknown block 'ecaa' (did you mean 'eca'?)"),
    "unimportable-block": (("--block", "no.such.module:Block"), "cannot import block 'no.such.module:Block'"),
    "bad-selector": (("--block", "eca", "--after", "1"), "cannot read site '1'"),
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_bad_block_options(case: str, workdir: Path) -> None:
    args, phrase = OPTIONS[case]
    assert_refused(run("insert", "torchvision:resnet18", *args, "-o", workdir / "out.pt", *SMALL), phrase)
    assert not any(workdir.iterdir())


def test_dry_run_rejects_what_the_real_run_rejects() -> None:
    result = run("insert", "torchvision:resnet18", "--block", "se", "--set", "rd_ratio=0", "--dry-run", *SMALL[:2])
    assert_refused(result, "rd_ratio must be > 0, got 0")


@pytest.mark.parametrize(("args", "phrase"), [
    (("--input-shape", "1,3,224"), "expected an NCHW shape"),
    (("--input-shape", "1,3,0,64"), "expected an NCHW shape"),
    (("--position", "sideways"), "'sideways' is not one of"),
    (("--set", "=3"), "expected key=value"),
    (("--arch-args", "not an assignment"), "expected key=value"),
])
def test_bad_usage_exits_2(args: tuple[str, ...], phrase: str, workdir: Path) -> None:
    result = run("insert", "torchvision:resnet18", "--block", "eca", *args, "-o", workdir / "out.pt")
    assert result.exit_code == 2 and phrase in result.stderr and "Traceback" not in result.output, result.output
    assert not any(workdir.iterdir())


# ------------------------------------------------------------------------------------------------ awkward models

@pytest.mark.parametrize("block", [info.name
                                   for info in list_blocks("insert")])
def test_channels_fewer_than_the_reduction_still_patch(block: str, workdir: Path) -> None:
    """Reductions default to 1/16 or 1/8; 2-channel units keep at least one hidden channel, and identity init holds."""
    out = workdir / "narrow.pt"
    settings: list[str] = []
    misfit = get_block(block).misfit(2, (16, 16))
    if misfit is not None:  # a block whose official form needs more channels says so, then takes the option that fits
        refused = run("insert", f"{FIXTURES}:narrow_cnn", "--block", block, "-o", out, "--input-shape", "1,3,16,16",
                      "--profile", "off")
        assert refused.exit_code == 1 and "does not fit 2 channels at 16x16" in refused.stderr, refused.output
        assert not out.exists()
        if not misfit.fix:
            return
        settings = [arg for key, value in misfit.fix.items() for arg in ("--set", f"{key}={value}")]
    result = run("insert", f"{FIXTURES}:narrow_cnn", "--block", block, "-o", out, "--input-shape", "1,3,16,16",
                 "--profile", "off", *settings)
    assert result.exit_code == 0, result.output
    assert "Patched 2 sites" in result.stdout and "max abs 0 " in result.stdout
    if block == "se":
        assert torch.load(out, weights_only=True)["1.se_residual.fc1.weight"].shape[:2] == (1, 2)


def test_one_by_one_spatial_sites_work(workdir: Path) -> None:
    """At 8x8 input resnet18's last stages are 1x1: spatial blocks still insert and keep the outputs."""
    out = workdir / "r18_nl.pt"
    result = run("insert", "torchvision:resnet18", "--block", "nonlocal", "--after", "layer4.*", "-o", out,
                 "--input-shape", "1,3,8,8", "--profile", "off")
    assert result.exit_code == 0, result.output
    assert "Patched 2 sites" in result.stdout and "max abs 0 " in result.stdout


def test_stage_selection_at_one_by_one(workdir: Path) -> None:
    """At 8x8, layer2..layer4 all end in 1x1 maps; stages still follow the units' strided convolutions."""
    result = run("insert", "torchvision:resnet18", "--block", "nonlocal", "--stage", "4", "-o", workdir / "o.pt",
                 "--input-shape", "1,3,8,8", "--profile", "off")
    assert result.exit_code == 0, result.output
    state = torch.load(workdir / "o.pt", weights_only=True)
    assert sorted({key.split(".nonlocal_residual.")[0] for key in state if ".nonlocal_residual." in key}) == [
        "layer4.0", "layer4.1"]


@pytest.mark.parametrize(("model", "after", "shape"), [
    ("mlp", "Linear", "1,3,8,8"),
    ("mlp", "re:[13]", "1,3,8,8"),
    ("tiny_vit", "_TokenBlock", "1,3,16,16"),
    ("tiny_vit", "blocks.*", "1,3,16,16"),
])
def test_sites_without_4d_activations_are_not_sites(model: str, after: str, shape: str, workdir: Path) -> None:
    """Linear layers and token blocks have 2-D/3-D activations: they are never sites, and selecting them says so
    and points to `attn-surgeon sites`."""
    result = run("insert", f"{FIXTURES}:{model}", "--block", "se", "--after", after, "-o", workdir / "o.pt",
                 "--input-shape", shape, "--profile", "off")
    assert_refused(result, "no site matches")
    assert "attn-surgeon sites MODEL" in result.stderr and not any(workdir.iterdir())


def test_patching_a_patched_checkpoint_stacks_with_suffixes(workdir: Path) -> None:
    """A second surgery on an attn-surgeon checkpoint does not refuse: it stacks a second block (named ``_1``)
    beside the first and the recipe grows by the new steps, so the file still rebuilds with surgeon.load()."""
    once, twice = workdir / "once.pt", workdir / "twice.pt"
    assert run("insert", "torchvision:resnet18", "--block", "eca", "-o", once, *SMALL).exit_code == 0
    digest = file_digest(once)
    result = run("insert", once, "--block", "eca", "-o", twice, *SMALL)
    assert result.exit_code == 0, result.output
    assert file_digest(once) == digest
    keys = torch.load(twice, weights_only=True).keys()
    assert "layer1.0.eca_residual.conv.weight" in keys and "layer1.0.eca_residual_1.conv.weight" in keys
    first, second = surgeon.recipe_of(surgeon.load(once)), surgeon.recipe_of(surgeon.load(twice))
    assert len(first.steps) == 8 and len(second.steps) == 16
    assert [s.to_dict() for s in second.steps[:8]] == [s.to_dict() for s in first.steps]
    assert {s.module for s in second.steps[8:]} == {s.module + "_1" for s in first.steps}


# ------------------------------------------------------------------------------------------------ input files

def _unreadable(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "locked.pt"
    torch.save({"w": torch.zeros(1)}, path)
    path.chmod(0)
    if not os.access(path, os.R_OK):
        return path
    # root ignores permission bits; another process's memory is still refused to root (EACCES on open)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    try:
        open("/proc/1/mem", "rb").close()
    except PermissionError:
        return Path("/proc/1/mem")
    except OSError:
        pass
    pytest.skip("running as root with no file that root cannot read")


def _input_file(kind: str, tmp_path: Path, r18_file: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / f"{kind}.pt"
    data = r18_file.read_bytes()
    if kind == "missing":
        return path
    if kind == "unreadable":
        return _unreadable(tmp_path, request)
    if kind == "directory":
        path.mkdir()
        return path
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "text": b"epoch 3: loss 0.1\n",
                      "garbage": os.urandom(4096)}[kind])
    return path


@pytest.mark.parametrize(("kind", "phrase"), [
    ("missing", "no such file"),
    ("unreadable", "not readable (permission denied)"),
    ("directory", "is a directory, expected a checkpoint file"),
    ("empty", "empty file"),
    ("truncated", "not a readable PyTorch checkpoint, or truncated"),
    ("text", "not a readable PyTorch checkpoint"),
    ("garbage", "not a readable PyTorch checkpoint"),
])
def test_broken_input_files(kind: str, phrase: str, tmp_path: Path, workdir: Path, r18_file: Path,
                            request: pytest.FixtureRequest) -> None:
    source = _input_file(kind, tmp_path, r18_file, request)
    digest = file_digest(source) if source.is_file() and kind != "unreadable" else None
    result = run("insert", source, "--arch", "torchvision:resnet18", "--block", "eca", "-o", workdir / "out.pt",
                 *SMALL)
    assert_refused(result, phrase)
    assert str(source) in result.stderr and not any(workdir.iterdir())
    if digest is not None:
        assert file_digest(source) == digest


def test_tensors_that_do_not_fit_the_arch(r18_file: Path, workdir: Path) -> None:
    digest = file_digest(r18_file)
    result = run("insert", r18_file, "--arch", "torchvision:resnet34", "--block", "eca", "-o", workdir / "o.pt",
                 *SMALL)
    assert_refused(result, "the checkpoint's tensors do not fit --arch torchvision:resnet34: 96 missing")
    assert file_digest(r18_file) == digest and not any(workdir.iterdir())


def test_unknown_arch_suggests_the_close_name(r18_file: Path, workdir: Path) -> None:
    result = run("insert", r18_file, "--arch", "torchvision:resnet19", "--block", "eca", "-o", workdir / "o.pt",
                 *SMALL)
    assert_refused(result, "unknown torchvision model 'resnet19'")


def test_pickled_model_needs_trust_pickle(workdir: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(torchvision.models.resnet18(), whole)
    digest = file_digest(whole)
    result = run("insert", whole, "--block", "eca", "-o", workdir / "o.pt", *SMALL)
    assert_refused(result, "refusing to unpickle code")
    assert "--trust-pickle" in result.stderr and file_digest(whole) == digest and not any(workdir.iterdir())


class _Payload:
    """Unpickling this calls ``os.system('touch MARKER')``: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
@pytest.mark.parametrize("flags", [(), ("--arch", "torchvision:resnet18"), ("--trust-code",)])
def test_malicious_pickle_never_runs(container: str, flags: tuple[str, ...], tmp_path: Path, workdir: Path) -> None:
    marker, evil = tmp_path / "MARKER", tmp_path / "evil.pt"
    if container == "torch-zip":
        torch.save({"conv1.weight": torch.zeros(1), "extra": _Payload(marker)}, evil)
    else:  # a legacy plain pickle, without tensors, so the only callable in it is the payload
        evil.write_bytes(pickle.dumps({"epoch": 3, "extra": _Payload(marker)}, protocol=2))
    digest = file_digest(evil)
    for command in (("insert", evil, "--block", "eca", "-o", workdir / "o.pt", *SMALL, *flags),
                    ("sites", evil, "--input-shape", "1,3,64,64", *flags)):
        result = run(*command)
        assert_refused(result, f"{evil}: refusing to unpickle code")
        assert f"(it refers to {os.system.__module__}.system)" in result.stderr
        assert "pass --trust-pickle" in result.stderr
        assert not marker.exists(), f"unpickling ran code: {command}"
    assert file_digest(evil) == digest and not any(workdir.iterdir())


def test_the_marker_check_can_fail(tmp_path: Path) -> None:
    """The payload is real: --trust-pickle unpickles it and the command runs (this is why it needs the flag)."""
    marker, evil = tmp_path / "MARKER", tmp_path / "evil.pt"
    torch.save({"extra": _Payload(marker)}, evil)
    run("sites", evil, "--trust-pickle", "--input-shape", "1,3,64,64")
    assert marker.exists()


# ------------------------------------------------------------------------------------------------ outputs

@pytest.mark.parametrize("directory", ["/proc", "/sys"])
def test_output_in_an_unwritable_directory(directory: str, r18_file: Path) -> None:
    if not Path(directory).is_dir():
        pytest.skip(f"no {directory} here")
    out = Path(directory) / "hostile_out.pt"
    digest = file_digest(r18_file)
    result = run("insert", r18_file, "--arch", "torchvision:resnet18", "--block", "eca", "-o", out, *SMALL)
    assert_refused(result, f"{out}: ")
    assert "cannot write in" in result.stderr or "does not exist" in result.stderr
    assert not out.exists() and file_digest(r18_file) == digest


def test_output_directory_missing(r18_file: Path, workdir: Path) -> None:
    out = workdir / "no" / "such" / "dir" / "o.pt"
    result = run("insert", r18_file, "--arch", "torchvision:resnet18", "--block", "eca", "-o", out, *SMALL)
    assert_refused(result, "does not exist")
    assert not any(workdir.iterdir())


def test_output_is_a_directory_is_bad_usage(workdir: Path) -> None:
    result = run("insert", "torchvision:resnet18", "--block", "eca", "-o", workdir, *SMALL)
    assert result.exit_code == 2 and "is a directory" in result.stderr and not any(workdir.iterdir())


def test_full_disk_leaves_no_partial_file(r18_file: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save

    def fill_disk(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)  # the bytes reach the temporary file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fill_disk)
    digest = file_digest(r18_file)
    out = workdir / "o.pt"
    result = run("insert", r18_file, "--arch", "torchvision:resnet18", "--block", "eca", "-o", out,
                 "--input-shape", "1,3,64,64")
    assert_refused(result, f"{out}: write failed (No space left on device); nothing was written")
    assert not any(workdir.iterdir()) and file_digest(r18_file) == digest


# ------------------------------------------------------------------------------------------------ recipes and code

@pytest.fixture
def user_block_checkpoint(workdir: Path) -> Path:
    """A checkpoint patched with a user block named on the command line (allowed: the user typed it)."""
    path = workdir / "user.pt"
    result = run("insert", "torchvision:resnet18", "--block", USER_BLOCK, "-o", path, *SMALL)
    assert result.exit_code == 0, result.output
    return path


def test_recipe_with_an_import_needs_trust_code_to_load(user_block_checkpoint: Path, workdir: Path) -> None:
    digest = file_digest(user_block_checkpoint)
    out = workdir / "again.pt"
    result = run("insert", user_block_checkpoint, "--block", "eca", "-o", out, *SMALL)
    assert_refused(result, f"its recipe inserts {USER_BLOCK}, which imports and runs code; pass --trust-code")
    assert not out.exists()
    with pytest.raises(ModelLoadError, match="--trust-code"):
        surgeon.load(user_block_checkpoint)
    rebuilt = surgeon.load(user_block_checkpoint, trust_code=True)
    assert rebuilt.state_dict().keys() == torch.load(user_block_checkpoint, weights_only=True).keys()
    result = run("insert", user_block_checkpoint, "--block", "eca", "-o", out, "--trust-code", *SMALL)
    assert result.exit_code == 0, result.output
    assert file_digest(user_block_checkpoint) == digest


def test_replaying_a_recipe_with_an_import_needs_trust_code(user_block_checkpoint: Path, workdir: Path) -> None:
    out = workdir / "replayed.pt"
    result = run("apply", "torchvision:resnet18", "--recipe", user_block_checkpoint, "-o", out, *SMALL)
    assert_refused(result, "--trust-code")
    assert not out.exists()


@pytest.fixture
def tampered_checkpoint(workdir: Path) -> tuple[Path, Path]:
    """A patched checkpoint whose recipe someone edited to name ``os:system`` as its base and as a block."""
    path, marker = workdir / "tampered.pt", workdir / "MARKER"
    assert run("insert", "torchvision:resnet18", "--block", "eca", "-o", path, *SMALL).exit_code == 0
    state = torch.load(path, weights_only=True)
    recipe = state._metadata["__surgeon__"]
    recipe["steps"][0]["block"] = "os:system"
    recipe["steps"][0]["args"] = {"command": f"touch {marker}"}
    torch.save(state, path)
    return path, marker


@pytest.mark.parametrize(("edit", "phrase"), [
    ("block", "its recipe inserts os:system, which imports and runs code; pass --trust-code"),
    ("base", "its recipe builds 'os:system', which imports and runs code; pass --trust-code"),
])
def test_tampered_recipe_never_imports(edit: str, phrase: str, tampered_checkpoint: tuple[Path, Path],
                                       workdir: Path) -> None:
    path, marker = tampered_checkpoint
    if edit == "base":
        state = torch.load(path, weights_only=True)
        state._metadata["__surgeon__"]["base"] = "os:system"
        torch.save(state, path)
    digest, before = file_digest(path), {p.name for p in workdir.iterdir()}
    for command in (("insert", path, "--block", "se", "-o", workdir / "o.pt", *SMALL),
                    ("sites", path, "--input-shape", "1,3,64,64")):
        assert_refused(run(*command), f"{path}: {phrase}")
    with pytest.raises(ModelLoadError, match="--trust-code"):
        surgeon.load(path)
    assert file_digest(path) == digest and not marker.exists()
    assert_nothing_written(workdir, before)


def test_replaying_a_tampered_recipe_never_imports(tampered_checkpoint: tuple[Path, Path], workdir: Path) -> None:
    path, marker = tampered_checkpoint
    result = run("apply", "torchvision:resnet18", "--recipe", path, "-o", workdir / "o.pt", *SMALL)
    assert not marker.exists()
    assert_refused(result, f"{path}: its recipe inserts os:system, which imports and runs code; pass --trust-code")
