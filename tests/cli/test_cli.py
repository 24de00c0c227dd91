"""The command line: exit codes, one-line errors, help with examples, nothing of the user's overwritten."""

from __future__ import annotations

import json
import os
import shlex
import stat
from pathlib import Path

import pytest
import torch
import torchvision

from surgeon.cli import cli
from tests._util import file_digest
from tests._util import run_cli as run

COMMANDS = sorted(cli.commands)


@pytest.fixture
def r18_state(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def assert_user_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {message}"
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert f"attn-surgeon {command}" in result.output


def _examples(command: str) -> list[list[str]]:
    text = cli.commands[command].epilog or ""
    return [shlex.split(line.strip())[1:] for line in text.splitlines() if line.strip().startswith("attn-surgeon ")]


def test_help_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example line of every command's help, run in order in an empty directory."""
    monkeypatch.chdir(tmp_path)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "ckpt.pt")
    order = ["blocks", "sites", "insert", "swap", "apply", "profile", "compare", "ablate", "export"]
    assert sorted(order) == COMMANDS
    for command in order:
        for args in _examples(command):
            if command == "profile":
                args += ["--runs", "2", "--warmup", "1", "--max-time", "0", "--input-shape", "1,3,64,64"]
            elif command == "compare":  # every block of the registry in one example: kept to counts and sizes
                args += ["--runs", "0", "--exports", "off", "--input-shape", "1,3,32,32", "--force"]
            elif command == "ablate":  # training is tests/experiments' work; here each plan is built (--dry-run)
                if "--report" in args:
                    continue
                args += [] if "--dry-run" in args else ["--dry-run"]
            elif command in ("insert", "swap", "apply", "sites", "export") and "--input-shape" not in args:
                args += ["--input-shape", "1,3,64,64"]
            result = run(*args)
            assert result.exit_code == 0, (args, result.output)


def test_insert_main_job(tmp_path: Path) -> None:
    out = tmp_path / "resnet50_eca.pt"
    result = run("insert", "torchvision:resnet50", "--block", "eca", "--after", "bottleneck", "-o", str(out),
                 "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert "Patched 16 sites" in result.stdout and "max abs 0 " in result.stdout
    state = torch.load(out, weights_only=True)
    assert sum(k.endswith("eca_residual.conv.weight") for k in state) == 16
    report = json.loads((tmp_path / "resnet50_eca.report.json").read_text())
    assert report["sites_patched"] == 16 and report["verification"]["keys_preserved"]
    assert report["parameters"]["added"] == 86 + 16  # adaptive kernels 5,5,5,7 plus one identity gate per block


def test_se_paper_cli_parameter_count(tmp_path: Path) -> None:
    result = run("insert", "torchvision:resnet50", "--block", "se", "--after", "bottleneck", "--init", "paper",
                 "-o", str(tmp_path / "se.pt"), "--json", "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parameters"]["after"] == 28_088_024


def test_dry_run_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("insert", "torchvision:resnet18", "--block", "cbam", "--dry-run", "--json", "--input-shape",
                 "1,3,64,64")
    assert result.exit_code == 0
    plan = json.loads(result.stdout)["plan"]
    assert [row["site"] for row in plan][:2] == ["layer1.0", "layer1.1"] and len(plan) == 8
    assert not any(tmp_path.rglob("*.pt"))


def test_unknown_block_lists_valid_ones() -> None:
    result = run("insert", "torchvision:resnet18", "--block", "ecaa")
    assert_user_error(result, "unknown block 'ecaa' (did you mean 'eca'?); valid blocks: bam, ca, cbam, ccnet, "
                              "cpca, danet_cam, danet_pam, eca, ela, ema, gam, gc, lsk, lska, mhsa, mlca, nonlocal, "
                              "residual_attention, sa, scbottleneck, scconv, scsa, se, simam, sk, triplet")


def test_selector_matching_nothing_names_it_and_suggests_sites(tmp_path: Path) -> None:
    result = run("insert", "torchvision:resnet18", "--block", "eca", "--after", "C2f", "--input-shape",
                 "1,3,64,64", "-o", str(tmp_path / "out.pt"))
    assert_user_error(result, "rule '--block eca --after C2f': no site matches (class=C2f); "
                              "run `attn-surgeon sites MODEL` to see what can match")


def test_missing_file() -> None:
    assert_user_error(run("insert", "no/such/model.pt", "--block", "eca"), "no/such/model.pt: no such file")


def test_bare_state_dict_architecture_is_detected(r18_state: Path, tmp_path: Path) -> None:
    result = run("insert", str(r18_state), "--block", "eca", "-o", str(tmp_path / "out.pt"), "--input-shape",
                 "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"{r18_state}: detected torchvision:resnet18 (122/122 tensors match")
    state = {"encoder.weight": torch.zeros(2, 2)}
    torch.save(state, tmp_path / "odd.pt")
    assert_user_error(run("insert", str(tmp_path / "odd.pt"), "--block", "eca"),
                      f"{tmp_path / 'odd.pt'}: no torchvision or timm architecture has these 1 tensors (first: "
                      "encoder.weight); pass --arch SPEC")


def test_format_safetensors_and_trust_pickle(tmp_path: Path) -> None:
    out = tmp_path / "r18_eca.safetensors"
    result = run("insert", "torchvision:resnet18", "--block", "eca", "--format", "safetensors", "-o", str(out),
                 "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    from safetensors import safe_open

    with safe_open(out, framework="pt") as file:
        assert "__surgeon__" in file.metadata()
    whole = tmp_path / "whole.pt"
    torch.save(torchvision.models.resnet18(), whole)
    assert run("sites", str(whole), "--input-shape", "1,3,64,64").exit_code == 1
    assert run("sites", str(whole), "--trust-pickle", "--input-shape", "1,3,64,64").exit_code == 0


def test_existing_output_needs_force_and_input_is_never_touched(r18_state: Path, tmp_path: Path) -> None:
    digest = file_digest(r18_state)
    out = tmp_path / "out.pt"
    out.write_bytes(b"precious")
    result = run("insert", str(r18_state), "--arch", "torchvision:resnet18", "--block", "eca", "-o", str(out))
    assert_user_error(result, f"{out}: exists; pass --force to overwrite it")
    assert out.read_bytes() == b"precious"
    result = run("insert", str(r18_state), "--arch", "torchvision:resnet18", "--block", "eca", "-o",
                 str(r18_state), "--force", "--input-shape", "1,3,64,64")
    assert_user_error(result, f"{r18_state}: is the input file; choose another output path")
    assert file_digest(r18_state) == digest
    assert not list(tmp_path.glob(".*.tmp"))


def test_checkpoint_with_arch_keeps_bare_layout_and_reloads(r18_state: Path, tmp_path: Path) -> None:
    out = tmp_path / "patched.pt"
    digest = file_digest(r18_state)
    result = run("insert", str(r18_state), "--arch", "torchvision:resnet18", "--block", "se", "-o", str(out),
                 "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert file_digest(r18_state) == digest
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # still a bare state_dict
    original = torch.load(r18_state, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in original.items())


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_containers_keep_their_other_entries(tmp_path: Path, key: str) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({key: torchvision.models.resnet18().state_dict(), "epoch": 7, "optimizer": {"lr": 0.1}}, path)
    out = tmp_path / "out.pt"
    result = run("insert", str(path), "--arch", "torchvision:resnet18", "--block", "eca", "-o", str(out),
                 "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert "dropped optimizer" in result.stderr
    saved = torch.load(out, weights_only=True)
    assert saved["epoch"] == 7 and "optimizer" not in saved and key in saved


def test_bad_usage_exits_2() -> None:
    result = run("insert", "torchvision:resnet18", "--block", "eca", "--input-shape", "1,3,224")
    assert result.exit_code == 2
    result = run("insert", "torchvision:resnet18")
    assert result.exit_code == 2 and "Missing option '-b' / '--block'" in result.output


def test_sites_table_and_json() -> None:
    result = run("sites", "torchvision:resnet50", "--kind", "block", "--json", "--input-shape", "1,3,64,64")
    assert result.exit_code == 0
    sites = json.loads(result.stdout)["sites"]
    assert len(sites) == 16
    assert (sites[0]["name"], sites[0]["cls"], sites[0]["stage"], sites[0]["index"]) == ("layer1.0", "Bottleneck", 1, 0)
    assert (sites[-1]["name"], sites[-1]["stage"], sites[-1]["index"]) == ("layer4.2", 4, 2)


def test_blocks_lists_registry_and_details() -> None:
    result = run("blocks", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["se"]["params_at_256"] == 8464 and rows["eca"]["params_at_256"] == 5
    assert rows["sk"]["kind"] == "swap"
    lska = rows["lska"]
    assert (lska["year"], lska["params_formula"], lska["params_at_256"], lska["export"], lska["export_note"]) == (
        2024, "C² + 17C (k_size 7; C² + (2k0 + 2k1 + 5)C)", 69888, "dynamic", "")
    assert lska["placement"].startswith("inside VAN's attention unit")
    detail = run("blocks", "coord")
    assert detail.exit_code == 0 and "houqb/CoordAttention" in detail.stdout
    assert "\nparameters: 3Cm + 3m + 2C, m = max(8, C/32); 6,680 at 256 channels\n" in detail.stdout
    assert "\nONNX export: dynamic\n" in detail.stdout
    listing = run("blocks")
    assert listing.exit_code == 0 and "placement in the paper" in listing.stdout and "ONNX export" in listing.stdout


def test_debug_shows_traceback() -> None:
    result = run("--debug", "insert", "torchvision:resnet18", "--block", "ecaa")
    assert result.exit_code == 1 and result.exception is not None


@pytest.fixture
def umask_027():
    """A stricter umask than the usual 022, so that modes the tool computes cannot pass by coincidence."""
    previous = os.umask(0o027)
    yield 0o027
    os.umask(previous)


def test_every_written_file_gets_a_normal_files_mode(tmp_path: Path, umask_027: int) -> None:
    checkpoint = tmp_path / "r18_eca.pt"
    assert run("insert", "torchvision:resnet18", "--block", "eca", "--input-shape", "1,3,64,64",
               "-o", str(checkpoint)).exit_code == 0
    report = tmp_path / "report.md"
    assert run("profile", str(checkpoint), "--runs", "0", "--warmup", "0", "--input-shape", "1,3,64,64",
               "--format", "md", "-o", str(report)).exit_code == 0
    exported = tmp_path / "r18_eca.torchscript.pt"
    assert run("export", str(checkpoint), "--to", "torchscript", "--input-shape", "1,3,64,64",
               "-o", str(exported)).exit_code == 0
    package = tmp_path / "r18_eca_py"
    assert run("export", str(checkpoint), "--to", "python", "--input-shape", "1,3,64,64",
               "-o", str(package)).exit_code == 0
    files = [checkpoint, checkpoint.with_name("r18_eca.report.json"), checkpoint.with_name("r18_eca.report.html"),
             report, exported, *package.iterdir()]
    assert {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in files} == {
        path.name: oct(0o666 & ~umask_027) for path in files}
    assert oct(stat.S_IMODE(package.stat().st_mode)) == oct(0o777 & ~umask_027)


def test_an_overwritten_file_keeps_its_mode(tmp_path: Path) -> None:
    checkpoint = tmp_path / "r18_eca.pt"
    checkpoint.write_bytes(b"old")
    checkpoint.chmod(0o600)
    assert run("insert", "torchvision:resnet18", "--block", "eca", "--input-shape", "1,3,64,64", "--profile", "off",
               "-o", str(checkpoint), "--force").exit_code == 0
    assert checkpoint.read_bytes() != b"old" and stat.S_IMODE(checkpoint.stat().st_mode) == 0o600
