"""ONNX Runtime's mobile format: an ``.ort`` flatbuffer of the ONNX export, with the operator list of a reduced build.

ONNX Runtime Mobile (Android, iOS) and its minimal builds load only ``.ort`` files; ``onnxruntime.tools.
convert_onnx_models_to_ort`` writes one with the graph optimisations applied ahead of time, and beside it
``<name>.required_operators.config``: the operators (per opset domain) a custom build must include to run it
(``build.sh --include_ops_by_config``). For ``arm`` targets x86-only layouts (NCHWc) are left out, so the file runs on
any CPU. The contract in the ONNX metadata is kept in the ``.ort`` file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

OPERATOR_CONFIG_SUFFIX = ".required_operators.config"


def convert_to_ort(
    onnx_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], target_platform: str = "arm"
) -> tuple[Path, Path]:
    """Write ``<stem>.ort`` and ``<stem>.required_operators.config`` for ``onnx_path`` into ``out_dir``.

    Both files appear complete or not at all (converted in a temporary folder, then moved).

    Args:
        onnx_path: the FP32 ONNX file (its contract metadata is carried over).
        out_dir: where the two files go.
        target_platform: ``"arm"`` (phones, Jetson CPUs; no x86-only layouts) or ``"amd64"``.

    Returns:
        The ``.ort`` file and the operator config.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ort-") as tmp:
        printed = io.StringIO()
        # the converter prints its progress and logs the config path: the export stage reports what it wrote
        with contextlib.redirect_stdout(printed), _quiet("ort_format_model"):
            convert_onnx_models_to_ort(
                onnx_path,
                output_dir=Path(tmp),
                optimization_styles=[OptimizationStyle.Fixed],
                target_platform=target_platform,
            )
        made = Path(tmp) / f"{onnx_path.stem}.ort", Path(tmp) / f"{onnx_path.stem}{OPERATOR_CONFIG_SUFFIX}"
        missing = [p.name for p in made if not p.is_file()]
        if missing:
            raise RuntimeError(
                f"{onnx_path}: ONNX Runtime's converter wrote no {', '.join(missing)}: {printed.getvalue()[-500:]}"
            )
        for path in made:
            os.replace(path, out_dir / path.name)
    return out_dir / made[0].name, out_dir / made[1].name


@contextlib.contextmanager
def _quiet(prefix: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in logging.root.manager.loggerDict if name.startswith(prefix)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
