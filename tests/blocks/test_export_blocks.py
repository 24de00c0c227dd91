"""Every built-in block exports to ONNX as its registry entry declares, inside a patched ResNet-18.

The block goes in at two resolutions (the first unit of stages 3 and 4; swaps: the second unit's conv1); the model is
exported with ``torch.onnx.export(dynamo=True)`` through :func:`surgeon.export.export_model` — dynamic batch, and
dynamic H and W where the entry says ``dynamic`` — then run in onnxruntime at two other sizes and compared with
PyTorch. A ``fixed_size`` entry is held to its word: its export refuses ``dynamic_size`` by name, runs at any batch,
and a raw dynamic export of the block really does fail at another size (so a stale declaration is caught too).

The default run covers a representative set (the kinds of op the blocks are made of, and a swap); ``-m slow`` runs
every registered block, including blocks added later. No built-in block is ``fixed_size`` today: a test block holds
that path to its word.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.blocks import BlockInfo, _registry, create_block, get_block, list_blocks, register_block
from surgeon.errors import BlockError, SurgeonError
from surgeon.export import export_model
from surgeon.match import parse_site_spec
from tests._util import build, randomize_norm_stats

ort = pytest.importorskip("onnxruntime")

SHAPE = (1, 3, 64, 64)
OTHER_SHAPES = [(3, 3, 96, 80), (2, 3, 49, 71)]  # neither the traced size nor export_model's own second size
BUILTINS = [info.name for info in list_blocks() if info.builtin]
# scconv: a swap, and the pool that was fixed for dynamic sizes; residual_attention: pools and resizes to the input's
# size; lsk: channel mean/max; gam: permutes, BatchNorm; mhsa: attention with resized relative position tables (also
# fixed for dynamic sizes). About 45 s on 2 busy cores.
REPRESENTATIVE = {"scconv", "residual_attention", "lsk", "gam", "mhsa"}


def _patched_resnet18(info: BlockInfo) -> torch.nn.Module:
    model = build("torchvision:resnet18")
    randomize_norm_stats(model)
    if info.kind == "insert":
        # options that fit both sites where the defaults do not (SCSA's 7x7 pooling window on 4x4 and 2x2 maps)
        misfit = info.misfit(512, (2, 2))
        rule = surgeon.Rule(parse_site_spec(r"re:layer[34]\.0"), info.name, init="paper",
                            args=dict(misfit.fix) if misfit else {})
    else:
        # the units of the second block of each stage: stride 1, so two-unit swaps (scbottleneck) fit a BasicBlock too
        rule = surgeon.Rule(parse_site_spec(r"re:layer[34]\.1\.conv1"), info.name, op="replace")
    return surgeon.run_surgery(model, [rule], input_shape=SHAPE).model.eval()


def _session(path: Path):
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _assert_runs_like_pytorch(session, model: torch.nn.Module, shapes: list[tuple[int, ...]]) -> None:
    for shape in shapes:
        x = torch.randn(shape)
        (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(torch.from_numpy(actual), expected, rtol=1e-4, atol=1e-4,
                                   msg=lambda m, shape=shape: f"at {shape}: {m}")


# torch 2.9's torch.export guards the batch of a patched model with an SCBottleneck to != 1, so its export with a
# dynamic batch fails there (README, known limits); torch 2.14 exports it. strict: it fails here if that changes.
OLD_TORCH_BATCH_GUARD = pytest.mark.xfail(torch.__version__ < "2.14", reason="torch.export on torch < 2.14 guards "
                                          "scbottleneck's batch", strict=True)


def _marks(name: str) -> tuple:
    return ((() if name in REPRESENTATIVE else (pytest.mark.slow,))
            + ((OLD_TORCH_BATCH_GUARD,) if name == "scbottleneck" else ()))


@pytest.mark.parametrize("name", [pytest.param(name, marks=_marks(name)) for name in BUILTINS])
def test_block_exports_to_onnx_as_declared(name: str, tmp_path: Path) -> None:
    info = get_block(name)
    assert info.export in ("dynamic", "fixed_size"), f"{name}: declare its export status in register_block"
    model = _patched_resnet18(info)
    path = tmp_path / f"{name}.onnx"
    if info.export == "dynamic":
        result = export_model(model, path, "onnx", input_shape=SHAPE, dynamic_size=True)
        assert result.max_abs_diff < 1e-4 and len(result.checked_shapes) == 2
        _assert_runs_like_pytorch(_session(path), model, OTHER_SHAPES)
        return
    with pytest.raises(SurgeonError, match=rf"^cannot export with a dynamic size: block '{name}' at \S+ fixes"):
        export_model(model, path, "onnx", input_shape=SHAPE, dynamic_size=True)
    result = export_model(model, path, "onnx", input_shape=SHAPE)
    assert result.max_abs_diff < 1e-4
    _assert_runs_like_pytorch(_session(path), model, [(3, *SHAPE[1:]), SHAPE])
    block = model.get_submodule(surgeon.recipe_of(model).steps[0].module)
    _assert_raw_dynamic_export_fails(block, model, tmp_path / "raw.onnx")


def _assert_raw_dynamic_export_fails(block: torch.nn.Module, model: torch.nn.Module, path: Path) -> None:
    """Exported alone with H, W dynamic anyway, the block fails or deviates at another size: still ``fixed_size``."""
    seen: list[torch.Tensor] = []
    hook = block.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.randn(2, *SHAPE[1:]))
    hook.remove()
    n, c, h, w = seen[0].shape
    dims = {0: torch.export.Dim("batch", min=1), 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(block, (seen[0],), dynamo=True, dynamic_shapes=(dims,))
        path.write_bytes(program.model_proto.SerializeToString())
        _assert_runs_like_pytorch(_session(path), block, [(n, c, h + 2, w + 1)])
    except Exception:
        return
    pytest.fail("the block exports with a dynamic size now: declare export='dynamic' in its registry entry")


class PositionScale(torch.nn.Module):
    """A test block that really has a fixed size: one learnable scale per channel and position of its site."""

    def __init__(self, channels: int, feat_size: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(channels, *feat_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_a_fixed_size_block_is_refused_by_name_and_exports_at_its_size(tmp_path: Path) -> None:
    register_block("test_position_scale", site_args=("feat_size",), export="fixed_size",
                   export_note="one scale per position of the site")(PositionScale)
    try:
        model = _patched_resnet18(get_block("test_position_scale"))
        path = tmp_path / "fixed.onnx"
        with pytest.raises(SurgeonError) as info:
            export_model(model, path, "onnx", input_shape=SHAPE, dynamic_size=True)
        assert str(info.value) == ("cannot export with a dynamic size: block 'test_position_scale' at layer3.0 fixes "
                                   "its input size (one scale per position of the site); export at a fixed size "
                                   "(without --dynamic-size), or use a block that `attn-surgeon blocks` lists as "
                                   "dynamic")
        assert not path.exists()
        assert export_model(model, path, "onnx", input_shape=SHAPE).max_abs_diff < 1e-4
        _assert_runs_like_pytorch(_session(path), model, [(3, *SHAPE[1:])])
        block = model.get_submodule(surgeon.recipe_of(model).steps[0].module)
        _assert_raw_dynamic_export_fails(block, model, tmp_path / "raw.onnx")
    finally:
        _registry._REGISTRY.pop("test_position_scale", None)


def test_register_block_checks_the_export_declaration() -> None:
    with pytest.raises(BlockError, match="^unknown export status 'yes'; valid: dynamic, fixed_size, untested$"):
        register_block("test_bad_export", export="yes")
    with pytest.raises(BlockError, match="^block 'test_bad_export': export 'fixed_size' needs export_note, a one-line"):
        register_block("test_bad_export", export="fixed_size")
    with pytest.raises(BlockError, match="needs export_note"):
        register_block("test_bad_export", export="fixed_size", export_note="two\nlines")
    assert "test_bad_export" not in _registry._REGISTRY


# --------------------------------------------------------------------------------------------- the declarations


def _evaluate(formula: str, channels: int) -> float:
    """A formula as ``attn-surgeon blocks`` shows it (``"2Ch + h + C, h = C/16"``) at ``channels``.

    Implicit products and ``²`` become Python; ``, x = ...`` defines a symbol; a trailing `` (...)`` is a note.

    Raises:
        NameError: the formula uses a symbol other than C and the ones it defines.
    """
    main, *definitions = re.split(r", (?=\w+ = )", formula.split(" (")[0])
    symbols: dict[str, float] = {"C": channels}
    for text in [*definitions[::-1], main]:
        target, _, expression = text.rpartition(" = ")
        tokens = re.findall(r"max|min|\d+(?:\.\d+)?|[A-Za-z]|²|[-+*/(),]", expression)
        python = ""
        for before, token in zip([""] + tokens, tokens):
            if (re.fullmatch(r"[\d.]+|[A-Za-z]|\)|²", before) and before not in ("max", "min")
                    and re.fullmatch(r"max|min|[A-Za-z]|\(", token)):
                python += "*"
            python += "**2" if token == "²" else token
        value = eval(python, {"__builtins__": {}, "max": max, "min": min}, symbols)  # noqa: S307 - our own strings
        if target:
            symbols[target] = value
    return value


NOT_IN_C_ALONE = {"eca", "mlca"}  # their count is the adaptive kernel size k, a function of C named in words


@pytest.mark.parametrize("name", BUILTINS)
def test_registry_entry_declares_paper_year_parameters_placement_and_export(name: str) -> None:
    info = get_block(name)
    assert info.paper and info.year and info.params and info.placement, f"{name}: fill its registry entry"
    assert info.export in ("dynamic", "fixed_size") and (info.export == "dynamic") != bool(info.export_note)
    if name in NOT_IN_C_ALONE:
        with pytest.raises(NameError):
            _evaluate(info.params, 64)
        return
    # two widths its default options fit (SA's 64 groups need C divisible by 128)
    widths = [c for c in (64, 256, 512) if info.kind != "insert" or info.misfit(c) is None][:2]
    for channels in widths:
        args = (channels,) if info.kind == "insert" else (channels, channels, 1)
        block = create_block(info, *args, init="paper")
        assert _evaluate(info.params, channels) == sum(p.numel() for p in block.parameters()), (name, channels)


def test_formula_reader() -> None:
    assert _evaluate("2Ch + h + C, h = C/16", 64) == 580
    assert _evaluate("3Cm + 3m + 2C, m = max(8, C/32)", 1024) == 100448
    assert _evaluate("1.5C² + 112.25C (r 4; (1 + 2/r)C² + (112 + 1/r)C)", 64) == 13328
    assert _evaluate("9C²/16 + 4C + 3Ca + 2a, a = max(C/16, 32) (32 groups)", 64) == 8768
    assert _evaluate("300", 7) == 300
