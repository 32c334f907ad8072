"""Compression: NNCF PTQ of an OpenVINO FP32 IR gives a real INT8 IR, and of an ONNX FP32 model a Q/DQ INT8 ONNX
model; both keep the contract and the embeddings.

Its drift from FP32 is measured on the same number of held-out faces from every group and reported per group.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomise_stats
from torch import nn

from factory.compress.compressors import COMPRESSORS, CompressContext, OnnxPTQ, OpenVINOPTQ
from factory.compress.layer_drift import emulate_fake_quantize, layers_moved_most
from factory.compress.ptq import PTQSettings, head_node_names, onnx_head_node_names, quantize_onnx, quantize_openvino
from factory.compress.stage import _summary, drift_faces
from factory.data.benchmark import PairBenchmark, pair_layout
from factory.export.onnx import export_onnx, read_onnx_contract
from factory.export.openvino import convert_to_openvino, read_openvino_contract
from factory.export.parity import check_parity, drift_by_group, fixed_inputs, format_group_drift
from factory.runtime.contract import ModelContract
from factory.runtime.runners import onnx_runner, openvino_runner

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
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(TrainedIshNet().eval(), tmp_path_factory.mktemp("fp32") / "net.onnx")


@pytest.fixture(scope="module")
def fp32_xml(fp32_onnx: Path) -> Path:
    return convert_to_openvino(fp32_onnx, fp32_onnx.with_name("net_fp32.xml"))


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
    settings = PTQSettings(keep_head_float=True)
    out = quantize_openvino(fp32_xml, fp32_xml.with_name("head_float.xml"), calibration[:16], settings)
    # Quantized: int8 weights dequantized by a Multiply; kept float: the fp32 constant feeds the MatMul directly.
    assert embedding_weight_producer(int8_xml)[0] == "Multiply"
    assert embedding_weight_producer(out) == ("Constant", "f32")
    assert quantization_evidence(out)[0] > 0, "the trunk must still be quantized"


def test_bad_arguments_fail_before_quantizing(fp32_xml: Path, calibration: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown PTQ preset 'fast'"):
        PTQSettings(preset="fast")
    with pytest.raises(ValueError, match="unknown PTQ activation_range 'max'.*minmax, mean_minmax"):
        PTQSettings(activation_range="max")
    with pytest.raises(ValueError, match="unknown PTQ overflow_fix 'on'"):
        PTQSettings(overflow_fix="on")
    with pytest.raises(TypeError, match="uint8"):
        quantize_openvino(fp32_xml, tmp_path / "x.xml", np.zeros((4, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        quantize_openvino(fp32_xml, tmp_path / "x.xml", calibration[:0])
    with pytest.raises(FileNotFoundError, match="no such OpenVINO IR"):
        quantize_openvino(tmp_path / "missing.xml", tmp_path / "x.xml", calibration)
    with pytest.raises(FileNotFoundError, match="no such ONNX model"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx", calibration)
    with pytest.raises(ValueError, match="empty"):
        quantize_onnx(fp32_xml.with_name("net.onnx"), tmp_path / "x.onnx", calibration[:0])
    assert not (tmp_path / "x.xml").exists() and not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------------------------------------------------------
# Q/DQ ONNX
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_onnx(fp32_onnx: Path, calibration: np.ndarray) -> Path:
    return quantize_onnx(fp32_onnx, fp32_onnx.with_name("net_int8.onnx"), calibration)


def onnx_op_counts(path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_qdq_onnx_is_quantized_keeps_contract_and_runs_in_onnx_runtime(fp32_onnx: Path, int8_onnx: Path) -> None:
    import onnx

    before, after = onnx_op_counts(fp32_onnx), onnx_op_counts(int8_onnx)
    assert before["QuantizeLinear"] == before["DequantizeLinear"] == 0
    # Activations are quantized then dequantized in front of every Conv and the Gemm; weights are dequantized.
    assert after["QuantizeLinear"] >= before["Conv"] and after["DequantizeLinear"] > after["QuantizeLinear"]
    model = onnx.load(str(int8_onnx))
    weight_types = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.INT8 in weight_types  # the weights themselves are stored as 8-bit integers
    assert read_onnx_contract(int8_onnx) == CONTRACT
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch kept
    inputs = fixed_inputs(CONTRACT, n=16, seed=0)
    result = check_parity(onnx_runner(fp32_onnx), onnx_runner(int8_onnx), inputs)
    assert 0.9 < result.min_cosine < 1.0, result
    assert onnx_runner(int8_onnx)(inputs[:3]).shape == (3, 512)
    assert not list(int8_onnx.parent.glob(".*partial*"))


def test_keep_head_float_in_onnx_leaves_the_gemm_unquantized(fp32_onnx: Path, calibration: np.ndarray) -> None:
    import onnx

    fp32 = onnx.load(str(fp32_onnx))
    # The exporter folds the embedding BatchNorm1d into the Gemm: the head is that one node, no Conv.
    assert onnx_head_node_names(fp32) == [node.name for node in fp32.graph.node if node.op_type == "Gemm"]
    settings = PTQSettings(keep_head_float=True)
    out = quantize_onnx(fp32_onnx, fp32_onnx.with_name("head_float.onnx"), calibration[:16], settings)
    model = onnx.load(str(out))
    (gemm,) = [node for node in model.graph.node if node.op_type == "Gemm"]
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    assert producers.get(gemm.input[1]) is None  # the fp32 initializer feeds it directly, no DequantizeLinear
    assert onnx_op_counts(out)["QuantizeLinear"] > 0, "the trunk must still be quantized"


def test_activation_ranges_from_the_whole_calibration_set_keep_rare_faces(fp32_xml: Path, tmp_path: Path) -> None:
    # Calibration of ordinary faces plus a few much brighter/contrastier ones: NNCF's default averages each
    # sample's extremes, so the rare samples' activations are clipped; global min/max ranges cover them.
    ordinary = fixed_inputs(CONTRACT, n=60, seed=3)
    rare = fixed_inputs(CONTRACT, n=4, seed=4) * 3.0
    calibration = np.concatenate([ordinary, rare]).astype(np.float32)
    cosines = {}
    for mode in ("minmax", "mean_minmax"):
        xml = quantize_openvino(fp32_xml, tmp_path / f"{mode}.xml", calibration, PTQSettings(activation_range=mode))
        cosines[mode] = check_parity(openvino_runner(fp32_xml), openvino_runner(xml), rare).min_cosine
    assert cosines["minmax"] > cosines["mean_minmax"], cosines


def test_compressors_are_registered_and_name_the_export_they_need(tmp_path: Path) -> None:
    assert {"openvino_ptq", "onnx_ptq"} <= set(COMPRESSORS.names())
    assert isinstance(OpenVINOPTQ(), PTQSettings) and OpenVINOPTQ().overflow_fix == "enable"
    assert OnnxPTQ().overflow_fix == "first_layer" and OnnxPTQ().activation_range == PTQSettings().activation_range
    ctx = CompressContext(parents={}, calibration=np.zeros((1, 3, 32, 32), np.float32), work_dir=tmp_path)
    with pytest.raises(ValueError, match=r"onnx_ptq quantizes the onnx_fp32 artifact: list \{kind: onnx\}"):
        OnnxPTQ().compress(ctx)
    with pytest.raises(ValueError, match=r"openvino_ptq quantizes the openvino_fp32 artifact: list \{kind: openvino\}"):
        OpenVINOPTQ().compress(ctx)


# ---------------------------------------------------------------------------------------------------------------
# Drift on group-balanced held-out faces
# ---------------------------------------------------------------------------------------------------------------


def layout_benchmark(pairs_per_group: int, n_groups: int = 3) -> PairBenchmark:
    """A benchmark with the procedural layout (10 folds, identities per fold) and no pixels worth looking at."""
    layout, same = pair_layout(pairs_per_group, np.random.default_rng(0))
    per_group = int(layout.max()) + 1
    subjects = (layout.reshape(1, -1) + per_group * np.arange(n_groups)[:, None]).reshape(-1)
    pairs = pairs_per_group * n_groups
    return PairBenchmark(
        images=np.zeros((2 * pairs, 3, 2, 2), np.uint8),
        issame=np.tile(same, n_groups),
        groups=np.repeat(np.arange(n_groups), pairs_per_group),
        subjects=subjects,
        group_names=tuple("abc"[:n_groups]),
    )


def test_drift_faces_take_as_many_from_every_group_spread_over_identities() -> None:
    bench = layout_benchmark(200)  # per group: 100 identities, 10 per fold, 400 images
    rows, groups = drift_faces(bench, 20)
    assert len(rows) == 60 and np.bincount(groups).tolist() == [20, 20, 20]
    assert (bench.groups[rows // 2] == groups).all()  # every face is labelled with the group of its pair
    for g in range(3):
        chosen = rows[groups == g]
        assert len(set(bench.subjects[chosen])) == 20  # one face per person while there are enough people
        folds = (chosen // 2 - 200 * g) // 20  # 20 pairs per fold
        assert np.bincount(folds, minlength=10).tolist() == [2] * 10  # spread over the whole group, not its start
    again_rows, again_groups = drift_faces(bench, 20)
    assert (again_rows == rows).all() and (again_groups == groups).all()


def test_drift_faces_top_up_when_a_group_has_fewer_people_and_refuse_when_too_few_faces() -> None:
    bench = layout_benchmark(40)  # per group: 20 identities, 80 images
    rows, groups = drift_faces(bench, 64)
    assert np.bincount(groups).tolist() == [64, 64, 64] and len(set(rows)) == len(rows)
    assert all(len(set(bench.subjects[rows[groups == g]])) == 20 for g in range(3))  # every person, then repeats
    with pytest.raises(ValueError, match="drift_images_per_group is 81 but group 'a' has only 80 benchmark faces"):
        drift_faces(bench, 81)


def test_drift_by_group_is_consistent_with_overall_and_with_check_parity() -> None:
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(90, 3, 4, 4)).astype(np.float32)
    groups = np.repeat([0, 1, 2], 30)
    noise = rng.normal(size=inputs.shape) * np.repeat([0.05, 0.3, 0.1], 30)[:, None, None, None]

    def reference(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)

    def candidate(x: np.ndarray) -> np.ndarray:  # rows are looked up, so batching cannot change the result
        rows = [int(np.flatnonzero((inputs == row).all(axis=(1, 2, 3)))[0]) for row in x]
        return (x + noise[rows]).reshape(len(x), -1)

    drift = drift_by_group(reference, candidate, inputs, groups, ["a", "b", "c"], batch_size=16)
    per_group = drift["groups"]
    assert [per_group[g]["n"] for g in "abc"] == [30, 30, 30] and drift["n"] == 90
    assert drift["mean_cosine"] == pytest.approx(np.mean([per_group[g]["mean_cosine"] for g in "abc"]))
    assert drift["min_cosine"] == min(per_group[g]["min_cosine"] for g in "abc") == per_group["b"]["min_cosine"]
    assert drift["max_abs_diff"] == max(per_group[g]["max_abs_diff"] for g in "abc")
    for stats in (drift, *per_group.values()):
        assert stats["min_cosine"] <= stats["p1_cosine"] <= stats["mean_cosine"] < 1
    assert per_group["b"]["mean_cosine"] < per_group["c"]["mean_cosine"] < per_group["a"]["mean_cosine"]
    whole = check_parity(reference, candidate, inputs).to_dict()
    assert {k: drift[k] for k in whole} == pytest.approx(whole)  # the parity keys the release report reads
    lines = format_group_drift(drift)
    assert [line.split()[1] for line in lines] == ["b", "c", "a"] and "1st percentile" in lines[0]
    assert format_group_drift({k: v for k, v in drift.items() if k != "groups"}) == []
    with pytest.raises(ValueError, match="no drift faces for group"):
        drift_by_group(reference, candidate, inputs, groups, ["a", "b", "c", "d"])


def test_compress_summary_names_the_group_that_drifts_most() -> None:
    drift = {"mean_cosine": 0.97, "p1_cosine": 0.91, "groups": {"a": {"mean_cosine": 0.98}, "b": {"mean_cosine": 0.95}}}
    metrics = {
        "calibration_images": 300,
        "drift_images_per_group": 64,
        "methods": {
            "openvino_int8": {"method": {"kind": "openvino_ptq"}, "quantize_seconds": 7.6, "drift": drift},
            "onnx_int8": {
                "method": {"kind": "onnx_ptq"},
                "quantize_seconds": 9.0,
                "drift": {**drift, "p1_cosine": 0.9},
            },
        },
    }
    assert _summary(metrics) == (
        "openvino_int8 in 7.6s, cosine vs FP32 0.9700 (1st percentile 0.9100, lowest group b 0.9500); "
        "onnx_int8 in 9.0s, cosine vs FP32 0.9700 (1st percentile 0.9000, lowest group b 0.9500); "
        "calibrated on 300 faces of procedural:calibration, drift on 64 held-out faces per group"
    )


def sabotaged_copy(onnx_path: Path, out: Path, initializer: str) -> Path:
    """The model with noise of twice its spread added to one convolution's weights (its outputs keep their names)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    for init in model.graph.initializer:
        if init.name == initializer:
            w = numpy_helper.to_array(init)
            noise = np.random.default_rng(0).normal(0, 2 * w.std(), w.shape).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(w + noise, initializer))
    onnx.save(model, str(out))
    return out


def test_layer_drift_ranks_the_layer_that_was_changed_first(fp32_onnx: Path, fp32_xml: Path, tmp_path: Path) -> None:
    broken_onnx = sabotaged_copy(fp32_onnx, tmp_path / "broken.onnx", "trunk.6.weight")  # the third convolution
    broken_xml = convert_to_openvino(broken_onnx, tmp_path / "broken.xml")
    inputs = fixed_inputs(CONTRACT, n=16, seed=3)
    for parent, changed, name in ((fp32_onnx, broken_onnx, "getitem_6"), (fp32_xml, broken_xml, "node_Conv_80")):
        rows = layers_moved_most(parent, changed, inputs, top=3)
        first, rest = rows[0], rows[1:]
        assert name in first["layer"], rows
        # the layers before it are untouched (its input cosine is 1); it loses far more than any layer after it
        assert first["input_cosine"] == pytest.approx(1.0, abs=1e-6) and first["added"] > 0.05
        assert all(r["added"] < first["added"] / 2 for r in rest)
    with pytest.raises(ValueError, match="compares two .onnx or two .xml models"):
        layers_moved_most(fp32_onnx, fp32_xml, inputs)


def test_fake_quantize_emulated_in_float_gives_the_int8_embeddings(fp32_xml: Path, int8_xml: Path) -> None:
    import openvino as ov

    core = ov.Core()
    inputs = fixed_inputs(CONTRACT, n=16, seed=4)

    def embed(model: ov.Model) -> np.ndarray:
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled.create_infer_request().infer({0: inputs})[0]

    emulated = emulate_fake_quantize(core.read_model(str(int8_xml)))
    assert not [op for op in emulated.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    real, fp32, float_int8 = (
        embed(core.read_model(str(int8_xml))),
        embed(core.read_model(str(fp32_xml))),
        embed(emulated),
    )
    cos = lambda a, b: float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))  # noqa: E731
    # the emulation reproduces the INT8 kernels' result far more closely than FP32 does
    assert cos(float_int8, real) > 0.999
    assert 1 - cos(float_int8, real) < (1 - cos(fp32, real)) / 3


def test_accuracy_control_puts_layers_back_in_float_until_the_validation_cosine_is_met(
    fp32_xml: Path, fp32_onnx: Path, int8_xml: Path, calibration: np.ndarray, tmp_path: Path
) -> None:
    from factory.compress.ptq import held_out_split
    from factory.export.parity import row_cosines

    def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(row_cosines(a, b).mean())

    # held out: every fourth calibration face, never calibrated on
    calibrate, validate = held_out_split(list(calibration[:, None]))
    assert len(validate) == 16 and len(calibrate) == 48
    assert not any(np.array_equal(v, c) for v in validate for c in calibrate)
    strict = PTQSettings(min_validation_cosine=0.999999)
    controlled = quantize_openvino(fp32_xml, tmp_path / "controlled.xml", calibration, strict)
    assert quantization_evidence(controlled)[0] < quantization_evidence(int8_xml)[0]  # fewer FakeQuantize ops
    held_out = calibration[::4]
    reference = openvino_runner(fp32_xml)(held_out)
    assert mean_cosine(openvino_runner(controlled)(held_out), reference) >= 0.999999
    assert mean_cosine(openvino_runner(int8_xml)(held_out), reference) < 0.999999  # plain PTQ does not reach it
    controlled_onnx = quantize_onnx(fp32_onnx, tmp_path / "controlled.onnx", calibration, strict)
    assert (
        onnx_op_counts(controlled_onnx)["QuantizeLinear"]
        < onnx_op_counts(quantize_onnx(fp32_onnx, tmp_path / "plain.onnx", calibration))["QuantizeLinear"]
    )
    assert mean_cosine(onnx_runner(controlled_onnx)(held_out), onnx_runner(fp32_onnx)(held_out)) >= 0.999999
    with pytest.raises(ValueError, match="4 are too few"):
        quantize_openvino(fp32_xml, tmp_path / "few.xml", calibration[:4], strict)


def test_row_cosines_golden_values_and_zero_rows() -> None:
    from factory.export.parity import row_cosines

    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(row_cosines(a, b), [0.0, 1.0, 0.0, 0.0], atol=1e-12)
    # a row zero on both sides has not moved when asked so (layer drift); one zero side is still a failure
    np.testing.assert_allclose(row_cosines(a, b, both_zero=1.0), [0.0, 1.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(row_cosines(a[:2, None, :], -b[:2, None, :]), [0.0, -1.0], atol=1e-12)  # flattened
