"""Write an ONNX CNN the way another tool would, with onnx.helper, plus an
input and ONNX Runtime's output for it.

usage: foreign.py OUT_DIR

Writes OUT_DIR/foreign.onnx, input.npy and expected.npy. The graph has what
PyTorch's exporter produces and netc's own exporter does not: batch norm left
unfolded after a biased convolution, PyTorch-style node names
(`/layer1/conv/Conv`), a `Gemm` with transB=1 and a [1, out] bias, a
flatten written as `Reshape` to a constant [0, -1] shape (made by a
`Constant` node), an `AveragePool` relying on count_include_pad's default of
0, a residual `Add`, a `Concat`, PyTorch's `chunk` and channel shuffle
(`Shape`/`Gather`/`Add`/`Div`/`Mul`/`Slice`, `Reshape`/`Transpose`), a `Resize`
whose sizes come from `Shape`/`Slice`/`Concat`, a spatial `ReduceMean`, `Dropout` and `Identity`, and weights in
float_data as well as raw_data, the larger ones in an external data file.
Used by compiler/tests/onnx.rs.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def main(out_dir):
    rng = np.random.RandomState(42)
    f32 = lambda *shape, scale=0.3: (rng.randn(*shape) * scale).astype(np.float32)
    inits = []

    def const(name, values):
        inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def init(name, array, raw=True):
        if raw:
            inits.append(numpy_helper.from_array(array, name))
        else:
            inits.append(
                helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.flatten().tolist())
            )
        return name

    nodes = [
        helper.make_node(
            "Conv",
            ["input", init("stem.conv.weight", f32(8, 3, 3, 3)), init("stem.conv.bias", f32(8), raw=False)],
            ["/stem/conv/Conv_output_0"],
            name="/stem/conv/Conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        ),
        helper.make_node(
            "BatchNormalization",
            [
                "/stem/conv/Conv_output_0",
                init("stem.bn.weight", (1 + f32(8)).astype(np.float32)),
                init("stem.bn.bias", f32(8)),
                init("stem.bn.running_mean", f32(8)),
                init("stem.bn.running_var", (1.0 + rng.rand(8)).astype(np.float32)),
            ],
            ["/stem/bn/BatchNormalization_output_0"],
            name="/stem/bn/BatchNormalization",
            epsilon=1e-5,
            momentum=0.9,
        ),
        helper.make_node("Relu", ["/stem/bn/BatchNormalization_output_0"], ["r0"], name="/stem/relu/Relu"),
        helper.make_node(
            "MaxPool", ["r0"], ["p0"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        # PyTorch's exporter passes shared or renamed weights through an
        # Identity of the initializer.
        helper.make_node(
            "Identity", [init("layer1.conv.weight", f32(8, 8, 3, 3))], ["onnx::Conv_113"],
            name="Identity_0",
        ),
        helper.make_node(
            "Conv",
            ["p0", "onnx::Conv_113"],
            ["c1"],
            name="/layer1/conv/Conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="/layer1/relu/Relu"),
        helper.make_node("Add", ["r1", "p0"], ["a1"], name="/layer1/Add"),
        helper.make_node(
            "AveragePool",
            ["a1"],
            ["ap"],
            name="/branch/avg/AveragePool",
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("Concat", ["a1", "ap"], ["cat0"], name="/Concat", axis=1),
        # `x.mean([2, 3], keepdim=True)` (netc's own exporter writes
        # GlobalAveragePool, which the round-trip tests cover).
        # `F.interpolate(cat, size=(12, 12), mode="bilinear")` as PyTorch's
        # exporter writes it: the sizes are the input's batch and channels
        # (a Shape sliced) concatenated with the new plane size.
        # `x.chunk(2, dim=1)` as PyTorch exports it (the split point from
        # Shape/Gather/Add/Div/Mul), the halves swapped, then torchvision's
        # channel_shuffle (Reshape to 5-D, Transpose, Reshape back).
        helper.make_node("Shape", ["cat0"], ["c_shape"], name="/chunk/Shape"),
        helper.make_node("Gather", ["c_shape", const("one", 1)], ["ch"], name="/chunk/Gather", axis=0),
        helper.make_node("Add", ["ch", const("one_1", [1])], ["ch1"], name="/chunk/Add"),
        helper.make_node("Div", ["ch1", const("two", [2])], ["half"], name="/chunk/Div"),
        helper.make_node("Mul", ["half", const("one_2", [1])], ["end0"], name="/chunk/Mul"),
        helper.make_node("Mul", ["half", const("two_1", [2])], ["end1"], name="/chunk/Mul_1"),
        helper.make_node(
            "Slice", ["cat0", const("zero", [0]), "end0", const("ax", [1])], ["lo"], name="/chunk/Slice"
        ),
        helper.make_node("Slice", ["cat0", "end0", "end1", const("ax_1", [1])], ["hi"], name="/chunk/Slice_1"),
        helper.make_node("Concat", ["hi", "lo"], ["swapped"], name="/chunk/Concat", axis=1),
        helper.make_node("Reshape", ["swapped", const("s5", [-1, 2, 8, 8, 8])], ["g5"], name="/shuffle/Reshape"),
        helper.make_node("Transpose", ["g5"], ["t5"], name="/shuffle/Transpose", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", const("s4", [-1, 16, 8, 8])], ["cat"], name="/shuffle/Reshape_1"),
        helper.make_node("Shape", ["cat"], ["cat_shape"], name="/Shape"),
        helper.make_node(
            "Slice",
            ["cat_shape", const("starts", [0]), const("ends", [2]), const("axes", [0])],
            ["cat_nc"],
            name="/Slice",
        ),
        helper.make_node("Concat", ["cat_nc", const("hw", [12, 12])], ["sizes"], name="/Concat_1", axis=0),
        helper.make_node(
            "Resize",
            ["cat", "", "", "sizes"],
            ["up"],
            name="/Resize",
            mode="linear",
            coordinate_transformation_mode="pytorch_half_pixel",
        ),
        helper.make_node("ReduceMean", ["up"], ["gap"], name="/ReduceMean", axes=[2, 3], keepdims=1),
        helper.make_node(
            "Constant",
            [],
            ["shape"],
            name="/Constant",
            value=numpy_helper.from_array(np.array([0, -1], dtype=np.int64)),
        ),
        helper.make_node("Reshape", ["gap", "shape"], ["flat"], name="/Reshape"),
        helper.make_node("Dropout", ["flat"], ["drop"], name="/dropout/Dropout"),
        helper.make_node(
            "Gemm",
            ["drop", init("fc.weight", f32(5, 16)), init("fc.bias", f32(1, 5))],
            ["logits"],
            name="/fc/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
        helper.make_node("Identity", ["logits"], ["output"], name="/Identity"),
    ]
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 5])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, producer_name="pytorch", opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = os.path.join(out_dir, "foreign.onnx")
    # The larger initialisers in a side file, as PyTorch's dynamo exporter
    # writes them (`model.onnx.data`).
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="foreign.onnx.data", size_threshold=256)
    x = rng.uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"input": x})
    np.save(os.path.join(out_dir, "input.npy"), x)
    np.save(os.path.join(out_dir, "expected.npy"), y)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
