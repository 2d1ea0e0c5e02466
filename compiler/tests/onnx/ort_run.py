"""Validate ONNX files with the ONNX checker and run them in ONNX Runtime.

usage: ort_run.py MODEL.onnx INPUT.npy OUTPUT.npy [MODEL INPUT OUTPUT ...]

For each triple: onnx.checker.check_model(full_check=True), then one
inference on INPUT (float32, fed to the model's only input), the first
output saved to OUTPUT. Used by compiler/tests/onnx.rs.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main(args):
    if len(args) % 3 != 0 or not args:
        sys.exit(__doc__)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    for model, inp, out in zip(args[0::3], args[1::3], args[2::3]):
        onnx.checker.check_model(onnx.load(model), full_check=True)
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        x = np.load(inp)
        (y, *_) = session.run(None, {session.get_inputs()[0].name: x})
        np.save(out, y)


if __name__ == "__main__":
    main(sys.argv[1:])
