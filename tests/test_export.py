"""Export: ONNX (contract metadata, dynamic batch, PReLU rewrite), OpenVINO IR, runners, parity, TensorRT."""

import importlib.util
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import randomise_stats
from torch import nn

from factory.export.onnx import export_onnx, read_onnx_contract, read_onnx_model_name, restore_prelu
from factory.export.openvino import convert_to_openvino, read_openvino_contract
from factory.export.parity import ParityError, ParityResult, check_parity, fixed_inputs, require_parity
from factory.export.tensorrt import build_engine
from factory.runtime.contract import ModelContract
from factory.runtime.preprocess import to_model_input_numpy
from factory.runtime.runners import (
    RUNTIMES,
    Runner,
    embed_uint8,
    load_runner,
    onnx_runner,
    openvino_runner,
    torch_runner,
)
from factory.runtime.tensorrt import INSTALL_HINT, tensorrt_available

CONTRACT = ModelContract(input_size=(32, 32), mean=(120.0, 110.0, 100.0), std=(60.0, 62.0, 64.0), embedding_dim=512)


def conv_bn_prelu(cin: int, cout: int, stride: int = 1, groups: int = 1, shared_slope: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.PReLU() if shared_slope else nn.PReLU(cout),
    )


class TestNet(nn.Module):
    """Conv/BN/PReLU trunk (one scalar-slope PReLU) with a MobileFaceNet-style linear + BN1d embedding head."""

    __test__ = False  # not a pytest test class

    def __init__(self, contract: ModelContract = CONTRACT) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            conv_bn_prelu(3, 16, stride=2),
            conv_bn_prelu(16, 16, groups=16),
            conv_bn_prelu(16, 32, stride=2, shared_slope=True),
            conv_bn_prelu(32, 32),
        )
        h, w = contract.input_size
        self.linear = nn.Linear(32 * (h // 4) * (w // 4), contract.embedding_dim)
        self.bn = nn.BatchNorm1d(contract.embedding_dim)
        self.contract, self.model_name = contract, "test_net"
        randomise_stats(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(self.trunk(x).flatten(1)))


@pytest.fixture(scope="module")
def model() -> TestNet:
    return TestNet().eval()


@pytest.fixture(scope="module")
def onnx_path(model: TestNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "test_net.onnx")


@pytest.fixture(scope="module")
def xml_path(onnx_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_openvino(onnx_path, tmp_path_factory.mktemp("ov") / "test_net.xml")


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return fixed_inputs(CONTRACT, n=8)


def op_counts(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


# --- ONNX ---------------------------------------------------------------------------------------------------------


def test_onnx_passes_checker_and_carries_contract(model: TestNet, onnx_path: Path) -> None:
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert read_onnx_contract(onnx_path) == model.contract
    assert read_onnx_model_name(onnx_path) == "test_net"
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["embedding"]
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    assert not list(onnx_path.parent.glob("*.partial")), "atomic write left a temporary file behind"


def test_read_onnx_contract_without_metadata_is_a_clear_error(onnx_path: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(onnx_path))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ValueError, match="factory.contract.*export_onnx"):
        read_onnx_contract(bare)
    with pytest.raises(ValueError, match="factory.contract"):
        onnx_runner(bare)


def test_onnx_dynamic_batch(onnx_path: Path, inputs: np.ndarray) -> None:
    batch_dim = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    runner = onnx_runner(onnx_path)
    one, three = runner(inputs[:1]), runner(inputs[:3])
    assert one.shape == (1, 512) and three.shape == (3, 512) and three.dtype == np.float32
    np.testing.assert_allclose(three[:1], one, rtol=1e-4, atol=1e-5)


def test_onnx_parity_with_torch(model: TestNet, onnx_path: Path, inputs: np.ndarray) -> None:
    result = check_parity(torch_runner(model), onnx_runner(onnx_path), inputs)
    assert result.n == 8
    assert result.min_cosine > 0.99999, result


def test_prelu_rewrite_removes_prelu_and_restores_exactly(model: TestNet, onnx_path: Path, inputs: np.ndarray) -> None:
    ops = op_counts(onnx_path)
    n_prelu = sum(isinstance(m, nn.PReLU) for m in model.modules())
    # Three per-channel PReLUs become BatchNorm/Relu/BatchNorm/Add, the scalar one a LeakyRelu.
    assert "PRelu" not in ops
    assert ops["LeakyRelu"] == 1 and ops["Relu"] == n_prelu - 1
    proto = onnx.load(str(onnx_path))
    assert restore_prelu(proto) == n_prelu - 1
    assert Counter(n.op_type for n in proto.graph.node)["PRelu"] == n_prelu - 1
    onnx.checker.check_model(proto, full_check=True)
    assert not [i for i in proto.graph.initializer if "one_minus_a" in i.name], "restore left rewrite weights"


def test_export_without_prelu_rewrite_keeps_prelu_and_parity(
    model: TestNet, tmp_path: Path, inputs: np.ndarray
) -> None:
    plain = export_onnx(model, tmp_path / "plain.onnx", rewrite_prelu=False, dynamic_batch=False)
    assert op_counts(plain)["PRelu"] == sum(isinstance(m, nn.PReLU) for m in model.modules())
    assert onnx.load(str(plain)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    rewritten = onnx_runner(tmp_path / "plain.onnx")
    assert check_parity(torch_runner(model), rewritten, inputs[:1]).min_cosine > 0.99999


def test_export_requires_a_contract(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="contract"):
        export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3)), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# --- OpenVINO -----------------------------------------------------------------------------------------------------


def test_openvino_fp32_parity_and_restored_prelu(model: TestNet, xml_path: Path, inputs: np.ndarray) -> None:
    import openvino as ov

    ops = Counter(op.get_type_name() for op in ov.Core().read_model(str(xml_path)).get_ordered_ops())
    # OpenVINO reads the scalar-slope LeakyRelu as PRelu too, so every PReLU of the model is one fused op again.
    assert ops["PRelu"] == sum(isinstance(m, nn.PReLU) for m in model.modules())
    assert ops["BatchNormInference"] == 0
    runner = openvino_runner(xml_path, precision="f32")
    result = check_parity(torch_runner(model), runner, inputs)
    assert result.min_cosine > 0.9999, result
    assert runner(inputs[:3]).shape == (3, 512)


def test_openvino_contract_round_trip(model: TestNet, xml_path: Path) -> None:
    assert xml_path.with_suffix(".bin").is_file()
    assert read_openvino_contract(xml_path) == model.contract
    assert not list(xml_path.parent.glob(".*partial*")), "atomic save left a temporary directory behind"


def test_openvino_fp16_ir_halves_the_weights_and_keeps_parity_and_contract(
    model: TestNet, xml_path: Path, inputs: np.ndarray, tmp_path: Path
) -> None:
    import openvino as ov

    from factory.export.exporters import FP16_GOLDEN_MIN_COSINE
    from factory.export.openvino import compress_ir_to_fp16

    fp16 = compress_ir_to_fp16(xml_path, tmp_path / "student_fp16.xml")
    assert read_openvino_contract(fp16) == model.contract
    size32, size16 = xml_path.with_suffix(".bin").stat().st_size, fp16.with_suffix(".bin").stat().st_size
    assert 0.45 < size16 / size32 < 0.55, (size16, size32)
    constants = {
        op.get_output_element_type(0).get_type_name()
        for op in ov.Core().read_model(str(fp16)).get_ordered_ops()
        if op.get_type_name() == "Constant"
    }
    assert "f16" in constants
    result = check_parity(torch_runner(model), openvino_runner(fp16, precision="f32"), inputs)
    assert result.min_cosine > FP16_GOLDEN_MIN_COSINE, result
    print(f"fp16 IR vs torch: min cosine {result.min_cosine:.7f}")


def test_openvino_ir_without_contract_is_a_clear_error(onnx_path: Path, tmp_path: Path) -> None:
    import openvino as ov

    bare = tmp_path / "bare.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(bare), compress_to_fp16=False)
    with pytest.raises(ValueError, match="rt_info factory/contract"):
        read_openvino_contract(bare)


def test_convert_takes_an_explicit_contract(onnx_path: Path, tmp_path: Path) -> None:
    other = ModelContract(input_size=(32, 32), colour_order="BGR")
    xml = convert_to_openvino(onnx_path, tmp_path / "other.xml", other)
    assert read_openvino_contract(xml) == other


def test_ort_mobile_round_trip_with_its_operator_config(
    model: TestNet, onnx_path: Path, inputs: np.ndarray, tmp_path: Path
) -> None:
    from factory.export.exporters import EXPORTERS, ExportContext
    from factory.runtime.artifacts import Artifact

    shutil.copy(onnx_path, tmp_path / "student.onnx")
    made = {"onnx_fp32": Artifact("onnx_fp32", ("student.onnx",), "onnxruntime")}
    exporter = EXPORTERS.get("ort_mobile")()
    with pytest.raises(ValueError, match="list {kind: onnx} before it"):
        exporter.export(ExportContext(model, tmp_path, {}, "torch_fp32"))
    artifact = exporter.export(ExportContext(model, tmp_path, made, "torch_fp32"))
    assert artifact.files == ("student.ort", "student.required_operators.config")
    assert (artifact.name, artifact.runtime, artifact.derived_from) == ("ort_mobile_fp32", "onnxruntime", "onnx_fp32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx", *artifact.files]  # nothing left behind
    assert (tmp_path / "student.ort").read_bytes()[4:8] == b"ORTM"  # the flatbuffer's file identifier
    runner = load_runner(tmp_path / "student.ort")
    assert runner.contract == CONTRACT  # the contract travels in the .ort file
    assert check_parity(torch_runner(model), runner, inputs).min_cosine > 0.9999
    assert runner(inputs[:3]).shape == (3, 512)  # dynamic batch
    # the reduced build's operator list names what the optimised graph runs
    config = (tmp_path / artifact.files[1]).read_text()
    line = next(x for x in config.splitlines() if x.startswith("ai.onnx;"))
    assert {"Conv", "Gemm"} & set(line.split(";")[2].split(","))


# --- runners ------------------------------------------------------------------------------------------------------


def test_load_runner_by_suffix(onnx_path: Path, xml_path: Path, inputs: np.ndarray) -> None:
    ort_runner, ov_runner = load_runner(onnx_path), load_runner(xml_path, threads=2, precision="f32")
    assert (ort_runner.kind, ov_runner.kind) == ("onnxruntime", "openvino")
    assert isinstance(ort_runner, Runner) and isinstance(ov_runner, Runner)
    assert ort_runner.contract == ov_runner.contract == CONTRACT
    assert check_parity(ort_runner, ov_runner, inputs).min_cosine > 0.9999
    assert set(RUNTIMES.names()) >= {"onnxruntime", "openvino", "tensorrt"}


def test_load_runner_missing_or_unknown_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx.*ONNX model"):
        load_runner(tmp_path / "missing.onnx")
    with pytest.raises(FileNotFoundError, match=r"missing\.xml.*OpenVINO IR"):
        load_runner(tmp_path / "missing.xml")
    with pytest.raises(ValueError, match=r"suffix '\.pt'"):
        load_runner(tmp_path / "model.pt")


def test_runner_rejects_raw_images_and_wrong_shapes(onnx_path: Path) -> None:
    runner = onnx_runner(onnx_path)
    with pytest.raises(TypeError, match="embed_uint8"):
        runner(np.zeros((1, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="N×3×32×32"):
        runner(np.zeros((1, 3, 112, 112), np.float32))


def test_embed_uint8_preprocesses_with_the_runner_contract(onnx_path: Path) -> None:
    images = np.random.default_rng(3).integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    runner = onnx_runner(onnx_path)
    np.testing.assert_array_equal(embed_uint8(runner)(images), runner(to_model_input_numpy(images, CONTRACT)))


def test_torch_runner_leaves_thread_count_alone(model: TestNet, inputs: np.ndarray) -> None:
    before = torch.get_num_threads()
    torch_runner(model, threads=1)(inputs[:1])
    assert torch.get_num_threads() == before


# --- parity helpers -----------------------------------------------------------------------------------------------


def test_fixed_inputs_are_deterministic_and_normalised() -> None:
    a, b, c = fixed_inputs(CONTRACT, 4, seed=0), fixed_inputs(CONTRACT, 4, seed=0), fixed_inputs(CONTRACT, 4, seed=1)
    assert a.shape == (4, 3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    lo = (0 - np.array(CONTRACT.mean)) / np.array(CONTRACT.std)
    hi = (255 - np.array(CONTRACT.mean)) / np.array(CONTRACT.std)
    assert np.all(a.min(axis=(0, 2, 3)) >= lo - 1e-6) and np.all(a.max(axis=(0, 2, 3)) <= hi + 1e-6)


def test_check_parity_values_and_require_parity() -> None:
    x = np.eye(3, dtype=np.float32)
    same = check_parity(lambda v: v, lambda v: v * 2.0, x)
    assert same.min_cosine == pytest.approx(1.0) and same.max_abs_diff == pytest.approx(1.0) and same.n == 3
    flipped = check_parity(lambda v: v, lambda v: np.roll(v, 1, axis=1), x)
    assert flipped.min_cosine == pytest.approx(0.0) and flipped.mean_cosine == pytest.approx(0.0)
    assert require_parity(same, 0.999, "same") is same
    with pytest.raises(ParityError, match=r"rolled: min cosine 0\.000000 < required 0\.999.*precision='f32'"):
        require_parity(flipped, 0.999, "rolled")
    with pytest.raises(ParityError, match="shape"):
        check_parity(lambda v: v, lambda v: v[:, :2], x)
    assert ParityResult(1.0, 1.0, 0.0, 3).to_dict() == {
        "min_cosine": 1.0,
        "mean_cosine": 1.0,
        "max_abs_diff": 0.0,
        "n": 3,
    }


# --- TensorRT -----------------------------------------------------------------------------------------------------


def test_build_engine_without_tensorrt_says_how_to_install(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail even where it is installed
    with pytest.raises(ImportError) as err:
        build_engine(onnx_path, tmp_path / "x.engine")
    assert str(err.value) == INSTALL_HINT
    assert "pip install tensorrt" in str(err.value)
    assert not (tmp_path / "x.engine").exists()


@pytest.mark.tensorrt
@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available(),
    reason="TensorRT is not installed on this machine",
)
def test_tensorrt_engine_parity(model: TestNet, onnx_path: Path, tmp_path: Path, inputs: np.ndarray) -> None:
    assert tensorrt_available()
    engine = build_engine(onnx_path, tmp_path / "test_net.engine", max_batch=8)
    runner = load_runner(engine)
    assert runner.kind == "tensorrt" and runner.contract == model.contract
    result = check_parity(torch_runner(model), runner, inputs)
    assert result.min_cosine > 0.999, result  # TF32 convolutions are allowed by default on Ampere+
    with pytest.raises(ValueError, match="QuantizeLinear"):
        build_engine(onnx_path, tmp_path / "int8.engine", int8=True)


def test_the_onnx_export_is_a_drop_in_recognition_model_for_insightface(tmp_path: Path) -> None:
    """insightface's model router picks our ONNX as ArcFaceONNX, and its own preprocessing gives our embedding."""
    from insightface.model_zoo import ArcFaceONNX, get_model

    from factory.models.zoo import create_model
    from factory.runtime.runners import embed_uint8, onnx_runner

    torch.manual_seed(0)
    student = create_model("tinyfar_c").eval()
    randomise_stats(student)
    path = export_onnx(student, tmp_path / "student.onnx")
    model = get_model(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(model, ArcFaceONNX)
    assert (model.input_mean, model.input_std) == (127.5, 127.5)  # not mistaken for an mxnet-era 0..255 model
    faces = np.random.default_rng(0).integers(0, 256, size=(4, 3, 112, 112), dtype=np.uint8)
    # insightface takes OpenCV's BGR HWC images and swaps them to RGB itself
    theirs = model.get_feat([np.ascontiguousarray(f.transpose(1, 2, 0)[:, :, ::-1]) for f in faces])
    ours = embed_uint8(onnx_runner(path))(faces)
    cosine = np.sum(theirs * ours, axis=1) / (np.linalg.norm(theirs, axis=1) * np.linalg.norm(ours, axis=1))
    assert cosine.min() > 0.99999, cosine
