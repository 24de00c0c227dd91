"""``attn-surgeon export``: each target is written, loaded back by its own runtime, and reproduces the outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import surgeon
from surgeon.cli import cli
from surgeon.cli.export import export
from surgeon.errors import OutputExistsError, SurgeonError
from surgeon.export import _deviation_at as deviation_at
from surgeon.export import other_size, write_python_package
from surgeon.io import build_arch
from surgeon.python_package import run_package
from tests._util import build, randomize_norm_stats

SHAPE = (1, 3, 64, 64)
# The command on its own, under the same group class as the real CLI (one-line errors, exit 1).
GROUP = type(cli)(commands={"export": export})


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A ResNet-18 with CBAM (paper init, so outputs differ from the original) saved by attn-surgeon."""
    model = build("torchvision:resnet18")
    randomize_norm_stats(model)
    rule = surgeon.Rule(surgeon.Selector(kind="block"), "cbam", init="paper")
    result = surgeon.run_surgery(model, [rule], input_shape=SHAPE, base="torchvision:resnet18")
    path = tmp_path_factory.mktemp("patched") / "r18_cbam.pt"
    surgeon.save(result.model, path)
    return path, result.model.eval()


def run(*args: str):
    return CliRunner().invoke(GROUP, list(args))


def reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_onnx_runs_in_onnxruntime_with_any_batch(patched, tmp_path: Path) -> None:
    import onnxruntime

    path, model = patched
    out = tmp_path / "r18_cbam.onnx"
    result = run("export", str(path), "--to", "onnx", "-o", str(out), "--input-shape", "1,3,64,64", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checked_with"] == "onnxruntime" and report["max_abs_diff"] < 1e-4
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 64, 64)  # traced at batch 2, run at 3: the batch is dynamic
    (actual,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(actual, reference(model, x).numpy(), atol=1e-4, rtol=1e-4)


def test_onnx_with_dynamic_size_runs_at_any_height_and_width(patched, tmp_path: Path) -> None:
    import onnxruntime

    path, model = patched
    out = tmp_path / "r18_cbam_any_size.onnx"
    result = run("export", str(path), "--to", "onnx", "-o", str(out), "--input-shape", "1,3,64,64", "--dynamic-size")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Wrote {out} (onnx); max abs difference ")
    assert result.stdout.rstrip().endswith("from PyTorch (onnxruntime at 1x3x64x64 and 1x3x96x80)")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 72, 40)  # neither size it was checked at
    (actual,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(actual, reference(model, x).numpy(), atol=1e-4, rtol=1e-4)


def test_a_size_baked_into_an_export_is_reported_in_one_line() -> None:
    def baked(x: torch.Tensor) -> None:
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\nindex: 2 Got: 96")

    with pytest.raises(SurgeonError) as info:
        deviation_at(torch.nn.Conv2d(3, 3, 1), baked, torch.randn(1, 3, 96, 80), "onnx")
    assert str(info.value) == ("onnx export with a dynamic size fails at 1x3x96x80: [ONNXRuntimeError] : 2 : "
                               "INVALID_ARGUMENT : Got invalid dimensions")
    assert other_size((1, 3, 64, 64)) == (1, 3, 96, 80) and other_size((2, 3, 1, 1)) == (2, 3, 2, 2)


def test_onnx_without_its_exporter_says_what_to_install(patched, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what `import onnxscript` sees where it is not installed
    path, _ = patched
    out = tmp_path / "r18_cbam.onnx"
    result = run("export", str(path), "--to", "onnx", "-o", str(out))
    assert result.exit_code == 1
    assert result.output == ("error: onnx export needs onnxscript, not installed: pip install 'attn-surgeon[onnx]' "
                             "(or: pip install onnxscript)\n")
    assert not out.exists()


def test_torchscript_reloads(patched, tmp_path: Path) -> None:
    path, model = patched
    out = tmp_path / "r18_cbam.torchscript.pt"
    result = run("export", str(path), "--to", "torchscript", "-o", str(out), "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Wrote {out} (torchscript); max abs difference 0 from PyTorch")
    with warnings.catch_warnings():  # newer torch deprecates torch.jit with a FutureWarning; the file still loads
        warnings.simplefilter("ignore", FutureWarning)
        reloaded = torch.jit.load(str(out))
    x = torch.randn(SHAPE)
    assert torch.equal(reloaded(x), reference(model, x))


def test_exported_program_runs(patched, tmp_path: Path) -> None:
    path, model = patched
    out = tmp_path / "r18_cbam.pt2"
    result = run("export", str(path), "--to", "exported-program", "-o", str(out), "--input-shape", "1,3,64,64",
                 "--static-batch")
    assert result.exit_code == 0, result.output
    program = torch.export.load(str(out))
    x = torch.randn(SHAPE)
    torch.testing.assert_close(program.module()(x), reference(model, x), atol=1e-5, rtol=1e-5)


def test_exported_program_with_dynamic_size_runs_at_another_size(patched, tmp_path: Path) -> None:
    path, model = patched
    out = tmp_path / "r18_cbam_any_size.pt2"
    result = run("export", str(path), "--to", "exported-program", "-o", str(out), "--input-shape", "1,3,64,64",
                 "--dynamic-size", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checked_shapes"] == [[1, 3, 64, 64], [1, 3, 96, 80]] and report["max_abs_diff"] < 1e-4
    x = torch.randn(3, 3, 48, 72)
    torch.testing.assert_close(torch.export.load(str(out)).module()(x), reference(model, x), atol=1e-4, rtol=1e-4)


def test_python_package_imports_in_a_fresh_process_and_reproduces_outputs(patched, tmp_path: Path) -> None:
    path, model = patched
    out = tmp_path / "r18_cbam_py"
    result = run("export", str(path), "--to", "python", "-o", str(out), "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "__init__.py", "basic_block_1.py", "basic_block_2.py", "build.py"]
    for file in out.iterdir():
        text = file.read_text()
        assert str(tmp_path) not in text and str(Path.home()) not in text and "weights_only=False" not in text
    assert "class PatchedBasicBlock(BasicBlock):" in (out / "basic_block_1.py").read_text()
    x = torch.randn(SHAPE)
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads({torch.get_num_threads()})  # the same reduction order as here, for bit equality
        sys.path.insert(0, {str(tmp_path)!r})
        from r18_cbam_py import build_model
        from r18_cbam_py.basic_block_1 import PatchedBasicBlock
        model = build_model(weights={str(path)!r}).eval()
        assert type(model.layer1[0]) is PatchedBasicBlock, type(model.layer1[0])
        with torch.no_grad():
            torch.save(model(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    assert torch.equal(torch.load(tmp_path / "y.pt"), reference(model, x))


def test_edited_forward_in_the_package_is_what_runs(patched, tmp_path: Path) -> None:
    _, model = patched
    out = tmp_path / "edited_py"
    write_python_package(model, out)
    x = torch.randn(SHAPE)
    assert torch.equal(run_package(out, model, x), reference(model, x))
    block = out / "basic_block_1.py"
    block.write_text(block.read_text().replace("    return relu_1\n", "    return relu_1 * 0\n", 1))
    assert not torch.allclose(run_package(out, model, x), reference(model, x))


def test_python_export_needs_a_patched_model_and_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(SurgeonError) as info:
        write_python_package(build_arch("torchvision:resnet18"), tmp_path / "plain_py")
    assert str(info.value) == "nothing to export as Python: the model has no module patched by attn-surgeon"
    with pytest.raises(SurgeonError) as info:
        write_python_package(build_arch("torchvision:resnet18"), tmp_path / "my-model")
    assert str(info.value) == (f"{tmp_path / 'my-model'}: a package name must be a Python identifier "
                               "(e.g. resnet50_eca_py)")
    assert not any(tmp_path.iterdir())


def test_existing_output_needs_force(patched, tmp_path: Path) -> None:
    path, model = patched
    out = tmp_path / "taken.pt2"
    out.write_bytes(b"precious")
    result = run("export", str(path), "--to", "exported-program", "-o", str(out))
    assert result.exit_code == 1 and result.stderr.strip() == f"error: {out}: exists; pass --force to overwrite it"
    assert out.read_bytes() == b"precious"
    package = tmp_path / "pkg_py"
    write_python_package(model, package)
    with pytest.raises(OutputExistsError):
        write_python_package(model, package)
    (package / "mine.txt").write_text("kept?")
    write_python_package(model, package, force=True)  # replaced whole, atomically
    assert not (package / "mine.txt").exists() and (package / "build.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg_py", "taken.pt2"]
