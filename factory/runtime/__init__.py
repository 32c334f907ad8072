"""The runtime layer: everything needed to run and check a released model, and nothing needed to build one.

It holds the model contract and how each format stores it, numpy preprocessing, the runner registry (ONNX Runtime,
OpenVINO, TensorRT), the latency harness (with OpenVINO's ``benchmark_app`` beside it), the artifact record every
stage returns, the release manifest schema and release verification.

This is what ships to targets, so it must stay torch-free: it imports numpy, the standard library,
:mod:`factory.registry`, :mod:`factory.files` and its own modules only, and each runtime package (``onnxruntime``,
``openvino``, ``tensorrt``) inside the function that uses it, so a target needs numpy plus the one runtime it runs.
Building code (``factory.models``, ``factory.export``, ...) depends on this layer, never the other way round.
"""
