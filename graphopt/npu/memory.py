"""Memory of an export: measured peak RSS, and the estimate made before INT8 calibration starts.

Why: onnxruntime's calibrators keep intermediate tensors per sample, and a model's weights are held several
times over during quantization (the ModelProto, onnxruntime's session, the quantizer's copy), so an INT8 export
used to grow with ``--calib-samples`` until the machine ran out (ConvNeXt-tiny at 224 px: 18-24 GB, no message).
Calibration is now fed in chunks that fit ``--calib-memory`` (see :func:`graphopt.npu.quantize.quantize_qdq`),
and :func:`estimate_int8` says up front what the export will need and what to lower when that does not fit.

Peak RSS is read from ``/proc/self/status`` (``VmHWM``), which :func:`reset_peak` resets through
``/proc/self/clear_refs`` so the figure is the export's own, even inside a long-lived process; elsewhere it is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak since it started).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.graph import Graph

MB = 1 << 20


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak() -> bool:
    """Reset the process's peak-RSS mark (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """Peak resident set size in bytes since the last :func:`reset_peak` (or since the process started)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def current_rss() -> int:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else peak_rss()


def available() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable``, capped by a cgroup v2 limit; None if unknown."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            left = int(limit) - used
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError):
        pass
    return avail


def weight_bytes(graph: Graph) -> int:
    return sum(np.asarray(v.const).nbytes for v in graph.constants.values() if v.const is not None)


def activation_bytes(graph: Graph) -> tuple[int, int]:
    """(bytes of all float node outputs of one sample, bytes of the largest one) from the graph's static types:
    what a calibrator that records every intermediate keeps per sample."""
    total = biggest = 0
    for n in graph.nodes:
        for o in n.outputs:
            t = o.type
            if t is None or not t.is_static or not t.dtype.is_float:
                continue
            b = (t.numel() or 0) * np.dtype(t.dtype.to_numpy()).itemsize
            total += b
            biggest = max(biggest, b)
    return total, biggest


#: weights are held about this many times at once while onnxruntime quantizes (the fp32 ModelProto, the saved
#: copy it reloads with shape inference, the calibration session, the quantizer's model and its int8 copy);
#: measured on a 224-px ResNet-18 and set with headroom
WEIGHT_COPIES = 4.0
#: calibration keeps one chunk's intermediates, plus onnxruntime's stacked copy of the tensor it histograms
ACTIVATION_COPIES = 1.5


def estimate_int8(graph: Graph, n_calib: int, calib_memory: int) -> dict[str, Any]:
    """What INT8 export of ``graph`` (static shapes, after legalization) will need, before it starts.

    Returns bytes: ``weights``, ``activations_per_sample``, ``chunk`` (samples per calibration chunk),
    ``estimate`` (extra memory on top of the current RSS), ``available`` (None if unknown) and ``fits``; and
    ``advice``: what to lower when it does not fit."""
    w = weight_bytes(graph)
    per, biggest = activation_bytes(graph)
    per = max(per, 1)
    chunk = max(1, min(n_calib, calib_memory // per))
    est = int(WEIGHT_COPIES * w + ACTIVATION_COPIES * chunk * per + 4 * biggest)
    avail = available()
    fits = avail is None or est <= avail
    advice = ""
    if not fits:
        if WEIGHT_COPIES * w + ACTIVATION_COPIES * per > avail:  # type: ignore[operator]
            advice = ("even one calibration sample does not fit: lower the input resolution (--input-shape), "
                      "export the fp32 model without --target, or run on a machine with more memory")
        else:
            room = max(1, int((avail - WEIGHT_COPIES * w - 4 * biggest) / ACTIVATION_COPIES))  # type: ignore[operator]
            advice = (f"lower --calib-memory to {max(1, room // MB)} MB or less (calibration then runs in smaller "
                      f"chunks; --calib-samples does not change the memory needed)")
    return {"weights": w, "activations_per_sample": per, "largest_activation": biggest, "chunk": chunk,
            "estimate": est, "available": avail, "fits": fits, "advice": advice}
