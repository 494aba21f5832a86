"""EnhanceNet as one ONNX graph, for runtimes without PyTorch: export, the op check, onnxruntime sessions.

    graph = deploy.to_onnx(net)                            # EnhanceNet.forward, any batch, height and width
    session = deploy.session(graph.SerializeToString(), threads=2)
    enhanced, x_r = deploy.run(session, x)

The graph is `EnhanceNet.forward` itself, traced by torch.export with a symbolic batch, height and width: every
size the forward derives from its input (the EFE's input size, x_r's size) is computed from the input's shape
inside the graph, so the graph applies model.py's size rule, the one test.py runs, at any size.
Optional packages: onnxscript (torch.onnx's exporter needs it) and onnxruntime, `pip install onnxruntime onnxscript`.
"""
import importlib.util
from pathlib import Path

import torch

from model import EnhanceNet

INPUT_NAME = "image"
OUTPUT_NAMES = ["enhanced", "x_r"]
OPTIONAL_PACKAGES = ["onnxscript", "onnxruntime"]
INSTALL_HINT = "pip install onnxruntime onnxscript (both in requirements-dev.txt)"
DEFAULT_OPSET = 18  # the lowest opset torch.onnx's exporter writes without converting the graph down
# The ops the graph may use: ONNX's core, which mobile and GPU runtimes implement. No Pow, which the GPU delegates of
# mobile runtimes lack: model.recurrent_enhance squares as x * x. An op outside this set fails the export.
PORTABLE_OPS = frozenset({"Add", "Cast", "Concat", "Constant", "Conv", "Div", "Gather", "Max", "Min", "Mul", "Pad",
                          "Relu", "Reshape", "Resize", "Shape", "Slice", "Squeeze", "Sub", "Tanh", "Unsqueeze"})


def missing_packages() -> list[str]:
    """The optional packages that are not installed, of OPTIONAL_PACKAGES."""
    return [name for name in OPTIONAL_PACKAGES if importlib.util.find_spec(name) is None]


def to_onnx(net: EnhanceNet, opset: int = DEFAULT_OPSET):
    """`net.forward` (on the CPU, float32) as an onnx.ModelProto with dynamic batch, height and width.

    Raises ValueError when the graph uses an op outside PORTABLE_OPS.
    """
    # Sides that are no multiple of the scale factor, and a batch of 2, so that no size is traced as a constant. Where
    # torch.export cannot prove a guard on the sizes for every size (a Python `if` on a size), torch.onnx.export
    # falls back to tracing the branch this example takes, silently: export.py checks sizes on each side of the rule.
    example = torch.rand(2, 3, 5 * net.scale_factor + 1, 7 * net.scale_factor + 5)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    program = torch.onnx.export(net, (example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=OUTPUT_NAMES, dynamic_shapes=(dims,), opset_version=opset,
                                verbose=False)
    graph = program.model_proto
    for node in graph.graph.node:  # the exporter records each node's Python stack, local paths included
        del node.metadata_props[:]
    check_portable(graph)
    return graph


def check_portable(graph) -> None:
    """Raise ValueError when the onnx.ModelProto `graph` uses an op outside PORTABLE_OPS, or ONNX functions."""
    unportable = {node.op_type for node in graph.graph.node} - PORTABLE_OPS
    if unportable or graph.functions:
        raise ValueError(f"the ONNX graph uses {sorted(unportable) or 'functions'}, outside deploy.PORTABLE_OPS")


def session(graph: bytes | Path, threads: int):
    """An onnxruntime CPU session of `graph` (serialized bytes or a .onnx file) on `threads` intra-op threads."""
    import onnxruntime  # here: optional, and bench.py imports this module without it
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 4  # fatal only: a failing run raises its error, not also a log line
    source = str(graph) if isinstance(graph, Path) else graph
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run(session, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(enhanced, x_r) from the graph for a CPU float32 Nx3xHxW x, as CPU tensors."""
    outputs = session.run(OUTPUT_NAMES, {INPUT_NAME: x.contiguous().numpy()})
    return tuple(torch.from_numpy(output) for output in outputs)
