"""An ONNX model run with onnxruntime on the live stream: built in code, no weights to fetch.

Run it on the demo's stream (needs the ``examples`` extra:
onnx, onnxruntime; ``make`` installs it)::

    rtstream demo --analyze examples/onnx_detector.py:detect
    make demo DEMO_ARGS="--analyze examples/onnx_detector.py:detect"

or on any sender's (the demo's own receiver holds its stream's ports)::

    rtstream view --sdp http://127.0.0.1:8000/sdp --analyze examples/onnx_detector.py:detect

The model is a tiny fixed-weight network made with ``onnx.helper``: it turns the RGB
frame into luma with a 1x1 convolution (BT.601 weights), pools it 16x16 (average), and
thresholds the result (``Greater``) against the picture's mean plus a margin: a coarse
map of the bright regions. Python then boxes the largest connected run of bright cells
per row band. It stands for any real detector exported to ONNX: ``detect`` is the
wrapper shape such a model needs (layout in, findings out), and onnxruntime runs it
without holding the GIL, so the receiver's event loop keeps draining its sockets.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

CELL = 16          # pooling cell (pixels)
MARGIN = 0.12      # a bright cell: above mean + MARGIN (in 0..1)


def build_model() -> bytes:
    """The serialized ONNX model: input ``rgb`` (1, 3, H, W) float32 in 0..1, output
    ``bright`` (1, 1, H/CELL, W/CELL) bool."""
    import onnx
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [0.299, 0.587, 0.114])
    margin = helper.make_tensor("m", TensorProto.FLOAT, [], [MARGIN])
    nodes = [
        helper.make_node("Conv", ["rgb", "w"], ["luma"]),
        helper.make_node("AveragePool", ["luma"], ["cells"], kernel_shape=[CELL, CELL],
                         strides=[CELL, CELL]),
        helper.make_node("ReduceMean", ["cells"], ["mean"], keepdims=1),
        helper.make_node("Add", ["mean", "m"], ["limit"]),
        helper.make_node("Greater", ["cells", "limit"], ["bright"]),
    ]
    graph = helper.make_graph(
        nodes, "bright_regions",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("bright", TensorProto.BOOL, [1, 1, None, None])],
        initializer=[weights, margin],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@functools.lru_cache(maxsize=1)
def _session() -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # leave the other core to the receiver
    return ort.InferenceSession(build_model(), opts, providers=["CPUExecutionProvider"])


def detect(frame: np.ndarray, context: Any = None) -> list[dict[str, Any]]:
    """Box the largest bright region the model marks (one finding, or none)."""
    h, w = frame.shape[:2]
    hc, wc = h // CELL * CELL, w // CELL * CELL
    x = frame[:hc, :wc].transpose(2, 0, 1)[None].astype(np.float32) * (1 / 255)
    (bright,) = _session().run(None, {"rgb": x})
    cells = bright[0, 0]
    if not cells.any():
        return []
    ys, xs = np.nonzero(cells)
    # the densest row band of cells: keep rows holding at least half the busiest row's cells
    per_row = cells.sum(axis=1)
    keep = per_row >= max(1, per_row.max() // 2)
    ys_keep = np.flatnonzero(keep)
    y0, y1 = int(ys_keep[0]), int(ys_keep[-1]) + 1
    xs_band = np.flatnonzero(cells[y0:y1].any(axis=0))
    x0, x1 = int(xs_band[0]), int(xs_band[-1]) + 1
    share = float(cells[y0:y1, x0:x1].mean())
    return [{
        "label": "bright region",
        "box": [x0 * CELL, y0 * CELL, (x1 - x0) * CELL, (y1 - y0) * CELL],
        "score": round(share, 3),
        "text": "onnx",
    }]
