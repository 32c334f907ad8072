"""ONNX → OpenVINO IR (``.xml`` + ``.bin``) with the model contract in ``rt_info``.

PReLU rewritten for ONNX Runtime (:func:`factory.export.onnx.rewrite_prelu_for_ort`) is restored before conversion:
OpenVINO fuses PReLU into the preceding convolution, which is faster than the rewritten form.

Weights stay FP32 in the IR (``compress_to_fp16=False``) so the FP32 artifact is a faithful baseline for the INT8 one;
the precision used at run time is a separate choice made by the runner (:mod:`factory.runtime.runners`).
OpenVINO is imported inside the functions so ``import factory`` stays light.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from factory.runtime.contract import RT_INFO_MODEL_NAME, ModelContract, get_contract, set_contract
from factory.runtime.runners import openvino_read_error

if TYPE_CHECKING:
    import openvino as ov


def convert_to_openvino(
    onnx_path: str | os.PathLike[str],
    xml_path: str | os.PathLike[str],
    contract: ModelContract | None = None,
) -> Path:
    """Convert an ONNX file to an FP32 OpenVINO IR that carries ``contract``.

    Args:
        onnx_path: the ONNX file (normally written by :func:`factory.export.onnx.export_onnx`).
        xml_path: the ``.xml`` to write; the weights go to the ``.bin`` beside it. Both appear atomically.
        contract: the model contract; read from the ONNX metadata when not given.

    Returns:
        ``xml_path`` as a :class:`Path`.

    """
    import onnx
    import openvino as ov

    from factory.export.onnx import read_onnx_contract, read_onnx_model_name, restore_prelu

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file to convert to OpenVINO")
    contract = contract if contract is not None else read_onnx_contract(onnx_path)
    proto = onnx.load(str(onnx_path))
    if restore_prelu(proto):
        # The ONNX file carries PReLU in ONNX Runtime's fast form; OpenVINO fuses the original op into the
        # convolution and is faster on it, so the IR is converted from the restored graph.
        with tempfile.TemporaryDirectory(prefix="factory-ov-") as tmp:
            restored = Path(tmp) / onnx_path.name
            onnx.save(proto, str(restored))
            model = ov.convert_model(str(restored))
    else:
        model = ov.convert_model(str(onnx_path))
    set_contract(model, contract)
    model_name = read_onnx_model_name(onnx_path)
    if model_name:
        model.set_rt_info(model_name, RT_INFO_MODEL_NAME)
    return save_ir_atomically(model, xml_path)


def read_openvino_contract(xml_path: str | os.PathLike[str]) -> ModelContract:
    """Read the :class:`ModelContract` stored in an IR's ``rt_info`` by :func:`convert_to_openvino`."""
    import openvino as ov

    xml_path = _existing_xml(xml_path)
    try:
        model = ov.Core().read_model(str(xml_path), str(xml_path.with_suffix(".bin")))
    except RuntimeError as e:  # OpenVINO raises RuntimeError for every unreadable IR
        raise ValueError(openvino_read_error(xml_path, e)) from None
    return get_contract(model, xml_path)


def save_ir_atomically(model: ov.Model, xml_path: str | os.PathLike[str], fp16: bool = False) -> Path:
    """Save an IR (FP16 weights with ``fp16``) so that ``xml_path`` and its ``.bin`` appear whole or not at all.

    ``save_model`` names the ``.bin`` after the ``.xml``, so both are written under a temporary directory beside the
    target and renamed into place, ``.bin`` first: a reader that sees the new ``.xml`` also sees its weights.
    """
    import openvino as ov

    xml_path = Path(xml_path)
    if xml_path.suffix != ".xml":
        raise ValueError(f"{xml_path}: an OpenVINO IR path must end in .xml")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{xml_path.stem}.", suffix=".partial", dir=xml_path.parent))
    try:
        tmp_xml = tmp_dir / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=fp16)
        for part in (tmp_xml.with_suffix(".bin"), tmp_xml):
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(part, xml_path.with_suffix(part.suffix))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return xml_path


def compress_ir_to_fp16(xml_path: str | os.PathLike[str], out_xml: str | os.PathLike[str]) -> Path:
    """Save the IR at ``xml_path`` again with FP16 weights (its rt_info, the contract included, travels along)."""
    import openvino as ov

    model = ov.Core().read_model(str(_existing_xml(xml_path)))
    return save_ir_atomically(model, out_xml, fp16=True)


def _existing_xml(xml_path: str | os.PathLike[str]) -> Path:
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise FileNotFoundError(f"{xml_path}: no such OpenVINO IR (.xml with its .bin beside it)")
    if not xml_path.with_suffix(".bin").is_file():
        raise FileNotFoundError(
            f"{xml_path.with_suffix('.bin')}: the weights of {xml_path.name} are missing "
            "(expected the IR's .bin beside its .xml)"
        )
    return xml_path
