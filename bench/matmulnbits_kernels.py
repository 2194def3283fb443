"""Issue 21 item 4: which MatMulNBits CPU kernels are fast, by bits and accuracy_level, at decode shape.

    .venv/bin/python bench/matmulnbits_kernels.py [--repeats 200] [--layers 30] [--dim 576] [--threads 1]

A chain of ``--layers`` MatMuls [1, dim] x [dim, dim] (SmolLM2-135M's hidden size, one token: the decode
step), fp32 and quantized by ONNX Runtime's MatMulNBitsQuantizer (RTN, block 32) at 4 and 8 bits with
accuracy_level 0 (float activations) and 4 (int8 activations); microseconds per run of the chain
(median over ``--repeats``, after warm-up), one session thread. Measured here: the 8-bit kernel at level 0
is an order of magnitude slower than fp32, at level 4 the fastest of all (bench/README.md section 8), which
is why the mixed-precision pass quantizes its int8 layers at level 4 on the CPU provider.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import common
import numpy as np
from bench_label_scoring import cpu_flags


def chain(layers: int, dim: int) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    name = "x"
    for index in range(layers):
        weight = (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(helper.make_node("MatMul", [name, f"w{index}"], [f"y{index}"], name=f"matmul{index}"))
        name = f"y{index}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, dim])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def quantized(model: Any, bits: int, level: int) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=32, is_symmetric=True, accuracy_level=level or None)
    quantizer.process()
    return quantizer.model.model


def microseconds(model: Any, dim: int, repeats: int, threads: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).standard_normal((1, dim)).astype(np.float32)}
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - began) * 1e6)
    return statistics.median(times)


def main() -> None:
    import copy

    args = common.parse_args(__doc__.splitlines()[0], repeats=200, extra={"layers": 30, "dim": 576, "threads": 1})
    report = common.Report("matmulnbits_kernels", "chain", "MatMulNBits CPU kernels at decode shape")
    report.data["machine"].update(cpu_flags())
    base = chain(args.layers, args.dim)
    rows = [["fp32 MatMul", "-", common.fmt(microseconds(base, args.dim, args.repeats, args.threads), 0)]]
    for bits in (4, 8):
        for level in (0, 4):
            model = quantized(copy.deepcopy(base), bits, level)
            rows.append([f"int{bits} MatMulNBits", str(level), common.fmt(microseconds(model, args.dim, args.repeats, args.threads), 0)])
    report.section(f"{args.layers} MatMuls [1, {args.dim}] x [{args.dim}, {args.dim}], {args.threads} thread(s), "
                   f"median us per run of {args.repeats}", common.table(["weights", "accuracy_level", "us/run"], rows))
    report.write()


if __name__ == "__main__":
    main()
