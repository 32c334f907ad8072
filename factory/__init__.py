"""factory: recipes in, fairness-gated INT8 face-recognition releases out.

Importing the package is cheap and side-effect free: stages import their heavy dependencies (NNCF, OpenVINO,
ONNX Runtime, TensorRT) only when they run.
"""

__version__ = "0.1.0"
