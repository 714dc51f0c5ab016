"""``perfsuite export OUTPUT``: write the ONNX file the suite measures, for other tools.

The file is the engine cache's export (made now if it is not there), the very bytes the
``onnxruntime`` backends run and the TensorRT backends build from, so ``polygraphy run OUTPUT
--onnxrt``, ``polygraphy inspect model OUTPUT`` or ``trtexec --onnx=OUTPUT`` see what perfsuite timed.
``onnxruntime`` uses the dynamic-batch export; ``tensorrt``/``tensorrt-rtx`` one export per batch
size (``--batch-size N``) unless ``[tool.perfsuite.tensorrt] dynamic_batch = true``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from perfsuite.config import PRECISIONS
from perfsuite.errors import InputError


def _batch_size(text: str) -> int | None:
    if text == "dynamic":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive integer or 'dynamic'")
    return int(text)


#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite export alexnet.onnx                         # the fp32 dynamic-batch export ONNX Runtime runs
  perfsuite export alexnet-fp16-b8.onnx --precision fp16 --batch-size 8
  polygraphy run alexnet.onnx --onnxrt                  # then check it with another tool
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write the ONNX file the suite measures (for polygraphy, trtexec)")
    parser.add_argument("output", metavar="OUTPUT", help="the .onnx file to write (its folder must exist)")
    parser.add_argument("--model", default=None, help="torchvision model (default: [tool.perfsuite] model)")
    parser.add_argument("--weights", default=None, help="auto | pretrained | random | PATH (default: "
                                                        "$PERFSUITE_WEIGHTS or [tool.perfsuite] weights)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default: fp32")
    parser.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|dynamic",
                        help="a static batch size, or 'dynamic' (1 to 256, what onnxruntime runs; the default)")
    parser.set_defaults(func=run)


def check_output_path(text: str) -> Path:
    """A file path whose folder exists and that is not a folder itself (:class:`InputError` otherwise)."""
    from perfsuite.output import check_output_path as check_path
    from perfsuite.output import resolve_target

    path = Path(text)
    if path.is_dir():
        raise InputError(f"{text}: is a folder; give the path of the .onnx file to write")
    if not resolve_target(path).parent.is_dir():
        raise InputError(f"{text}: folder {path.parent} does not exist")
    return check_path(path, text)


def run(args: argparse.Namespace) -> int:
    from perfsuite.commands._common import load_model_reporting_warnings
    from perfsuite.config import load_suite_config
    from perfsuite.onnx_export import export_onnx
    from perfsuite.results import write_bytes_atomic

    output = check_output_path(args.output)  # before the export, which takes seconds
    model = load_model_reporting_warnings(args.model or load_suite_config().model, args.weights)
    export = export_onnx(model, args.precision, args.batch_size)
    write_bytes_atomic(output, export.data, args.output)
    origin = "from the cache" if export.hit else f"exported now in {export.build_s:.1f} s"
    print(f"{output}: {export.size:,} bytes, sha256 {export.sha256}, {model.name} {args.precision} "
          f"{'dynamic batch' if args.batch_size is None else f'batch {args.batch_size}'}, weights {model.weights} "
          f"{model.short_fingerprint} ({origin}; cache file {export.path})")
    print(f"  polygraphy inspect model {output}\n  polygraphy run {output} --onnxrt\n  trtexec --onnx={output}")
    return 0
