"""``attn-surgeon export``: a patched model as ONNX, TorchScript, a torch.export program, or Python source."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OutputExistsError
from ..export import TARGETS, default_export_path, export_model, require_exporter
from ..tensors import default_input_shape
from ._console import out, print_json, progress
from ._options import LoadOptions, input_shape_option, load_source, model_errors, model_options

EXAMPLES = """\b
Examples:
  attn-surgeon insert torchvision:resnet18 --block cbam -o r18_cbam.pt
  attn-surgeon export r18_cbam.pt --to onnx -o r18_cbam.onnx
  attn-surgeon export r18_cbam.pt --to onnx --dynamic-size -o r18_cbam_any_size.onnx
  attn-surgeon export r18_cbam.pt --to python -o r18_cbam_py
  attn-surgeon export r18_cbam.pt --to torchscript --json
"""


@click.command("export", epilog=EXAMPLES)
@click.argument("model")
@click.option("--to", "target", type=click.Choice(TARGETS), required=True,
              help="onnx, torchscript (traced), exported-program (torch.export .pt2) or python (a readable package "
                   "of the patched modules' generated forward code).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="File to write (a directory for python) [default: beside MODEL: NAME.onnx, NAME.torchscript.pt, "
                   "NAME.pt2 or NAME_py].")
@input_shape_option
@click.option("--static-batch", is_flag=True,
              help="Fix the batch size to --input-shape's (onnx and exported-program take any batch by default).")
@click.option("--dynamic-size", is_flag=True,
              help="Let onnx and exported-program take any height and width (checked at a second size too); "
                   "`attn-surgeon blocks` shows which blocks export so.")
@click.option("--opset", type=int, help="ONNX opset version [default: the exporter's].")
@model_options
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def export(model: str, target: str, output: Path | None, input_shape: tuple[int, ...] | None, static_batch: bool,
           dynamic_size: bool, opset: int | None, load: LoadOptions, force: bool, as_json: bool) -> None:
    """Export MODEL (usually a checkpoint written by insert, swap or apply) to another format.

    The export is loaded back and run on a random batch of --input-shape, and its largest output difference
    from the PyTorch model is printed (onnx is run in onnxruntime when it is installed).
    """
    require_exporter(target)
    output = output or default_export_path(model, target)
    if output.exists() and not force:  # both checks before the (slow) load, not after
        raise OutputExistsError(f"{output}: exists; pass --force to overwrite it")
    loaded = load_source(model, load)
    input_shape = input_shape or default_input_shape(loaded.module)
    with progress(f"Exporting to {target}"), model_errors(model):
        result = export_model(loaded.module, output, target, input_shape=input_shape, force=force, opset=opset,
                              dynamic_batch=not static_batch, dynamic_size=dynamic_size)
    if as_json:
        print_json({"model": model, "target": target, "path": str(result.path), "files": [str(f) for f in result.files],
                    "input_shape": list(input_shape), "max_abs_diff": result.max_abs_diff,
                    "checked_with": result.checked_with, "checked_shapes": [list(s) for s in result.checked_shapes]})
        return
    shapes = ["x".join(map(str, shape)) for shape in result.checked_shapes]
    at = f" at {' and '.join(shapes)}" if len(shapes) > 1 else ""
    check = ("not checked" if result.max_abs_diff is None
             else f"max abs difference {result.max_abs_diff:.3g} from PyTorch ({result.checked_with}{at})")
    out.print(f"Wrote {result.path} ({target}); {check}", highlight=False)
