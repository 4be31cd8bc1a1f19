#!/usr/bin/env python3
"""Runs an exported ONNX backbone with onnxruntime on images stored as .npy files.

Usage: onnx_run.py MODEL.onnx IN1.npy [IN2.npy ...]; writes IN*.npy's output beside it as
IN*.out.npy (float32), the test's check that `dino export --format onnx` reproduces our features.
"""
import sys

import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
for path in sys.argv[2:]:
    out = session.run(None, {"image": np.load(path).astype(np.float32)})[0]
    np.save(path[:-len(".npy")] + ".out.npy", out.astype(np.float32))
