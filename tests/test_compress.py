"""Compression: NNCF PTQ of an OpenVINO FP32 IR gives a real INT8 IR that keeps the contract and the embeddings."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomise_stats
from torch import nn

from factory.compress.ptq import head_node_names, quantize_openvino
from factory.export.onnx import export_onnx
from factory.export.openvino import convert_to_openvino, read_openvino_contract
from factory.export.parity import check_parity, fixed_inputs
from factory.runtime.contract import ModelContract
from factory.runtime.runners import openvino_runner

CONTRACT = ModelContract(input_size=(32, 32), embedding_dim=512)


class TrainedIshNet(nn.Module):
    """Conv/BN/PReLU trunk and linear + BN1d head with BatchNorm statistics that are not the identity."""

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [], 3
        for cout, stride in ((16, 2), (32, 1), (32, 2), (64, 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout)]
            cin = cout
        self.trunk = nn.Sequential(*layers)
        self.linear = nn.Linear(64 * 8 * 8, 512)
        self.bn = nn.BatchNorm1d(512)
        self.contract, self.model_name = CONTRACT, "test_net"
        randomise_stats(self, seed=0, prelu_max=0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(self.trunk(x).flatten(1)))


@pytest.fixture(scope="module")
def fp32_xml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fp32")
    onnx_path = export_onnx(TrainedIshNet().eval(), root / "net.onnx")
    return convert_to_openvino(onnx_path, root / "net_fp32.xml")


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return fixed_inputs(CONTRACT, n=64, seed=1)  # a different seed from the evaluation inputs below


@pytest.fixture(scope="module")
def int8_xml(fp32_xml: Path, calibration: np.ndarray) -> Path:
    return quantize_openvino(fp32_xml, fp32_xml.with_name("net_int8.xml"), calibration)


def quantization_evidence(xml: Path) -> tuple[int, int]:
    """(FakeQuantize ops, 8-bit integer constants) in an IR."""
    import openvino as ov

    ops = ov.Core().read_model(str(xml)).get_ordered_ops()
    fake_quantize = Counter(op.get_type_name() for op in ops)["FakeQuantize"]
    int_constants = sum(
        op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() in ("i8", "u8") for op in ops
    )
    return fake_quantize, int_constants


def test_int8_ir_is_quantized_and_keeps_contract(fp32_xml: Path, int8_xml: Path) -> None:
    assert int8_xml.is_file() and int8_xml.with_suffix(".bin").is_file()
    assert quantization_evidence(fp32_xml) == (0, 0)
    fake_quantize, int_constants = quantization_evidence(int8_xml)
    assert fake_quantize > 0 and int_constants > 0  # activations fake-quantized, weights stored as int8
    assert read_openvino_contract(int8_xml) == CONTRACT
    assert int8_xml.with_suffix(".bin").stat().st_size < fp32_xml.with_suffix(".bin").stat().st_size / 2
    assert not list(int8_xml.parent.glob(".*partial*"))


def test_int8_embeddings_stay_close_to_fp32(fp32_xml: Path, int8_xml: Path) -> None:
    inputs = fixed_inputs(CONTRACT, n=16, seed=0)
    result = check_parity(openvino_runner(fp32_xml), openvino_runner(int8_xml), inputs)
    assert 0.9 < result.min_cosine < 1.0, result  # < 1: the weights really were rounded
    assert openvino_runner(int8_xml)(inputs[:3]).shape == (3, 512)


def embedding_weight_producer(xml: Path) -> tuple[str, str]:
    """(op type, element type) of what feeds the weights of the embedding MatMul."""
    import openvino as ov

    (matmul,) = [op for op in ov.Core().read_model(str(xml)).get_ordered_ops() if op.get_type_name() == "MatMul"]
    weights = matmul.input_value(1).get_node()
    return weights.get_type_name(), weights.get_output_element_type(0).get_type_name()


def test_keep_head_float_leaves_the_embedding_linear_unquantized(
    fp32_xml: Path, int8_xml: Path, calibration: np.ndarray
) -> None:
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    matmuls = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"}
    convolutions = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"}
    head = set(head_node_names(model))
    assert matmuls <= head and not convolutions & head
    out = quantize_openvino(fp32_xml, fp32_xml.with_name("head_float.xml"), calibration[:16], keep_head_float=True)
    # Quantized: int8 weights dequantized by a Multiply; kept float: the fp32 constant feeds the MatMul directly.
    assert embedding_weight_producer(int8_xml)[0] == "Multiply"
    assert embedding_weight_producer(out) == ("Constant", "f32")
    assert quantization_evidence(out)[0] > 0, "the trunk must still be quantized"


def test_bad_arguments_fail_before_quantizing(fp32_xml: Path, calibration: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown PTQ preset 'fast'"):
        quantize_openvino(fp32_xml, tmp_path / "x.xml", calibration, preset="fast")
    with pytest.raises(TypeError, match="uint8"):
        quantize_openvino(fp32_xml, tmp_path / "x.xml", np.zeros((4, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        quantize_openvino(fp32_xml, tmp_path / "x.xml", calibration[:0])
    with pytest.raises(FileNotFoundError, match="no such OpenVINO IR"):
        quantize_openvino(tmp_path / "missing.xml", tmp_path / "x.xml", calibration)
    assert not (tmp_path / "x.xml").exists()
