"""The latency harness: golden percentiles and intervals, each runtime's bound call, and benchmark_app beside it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from factory.export.onnx import export_onnx
from factory.export.openvino import convert_to_openvino
from factory.models.zoo import create_model
from factory.runtime import latency
from factory.runtime.benchmark_app import BenchmarkAppUnavailable, difference, run_benchmark_app
from factory.runtime.latency import measure_latency, median_interval, time_runner
from factory.runtime.runners import onnx_runner, openvino_runner, torch_runner


def test_median_interval_ranks_match_scipys_binomial_quantile() -> None:
    from scipy.stats import binom

    for n, level in itertools.product(range(1, 160), (0.9, 0.95, 0.99)):
        samples = np.arange(n, dtype=np.float64)[::-1]  # given unsorted
        rank = max(int(binom.ppf((1 - level) / 2, n, 0.5)), 1)
        assert median_interval(samples, level) == (rank - 1, n - rank), (n, level)
    for n in (1024, 5000):  # past float range for 2**n
        rank = int(binom.ppf(0.025, n, 0.5))
        assert median_interval(np.arange(n, dtype=np.float64)) == (rank - 1, n - rank), n
    # golden: 100 samples at 95 % are bounded by the 40th and 61st order statistics
    assert median_interval(np.arange(1.0, 101.0)) == (40.0, 61.0)


def test_measure_latency_percentiles_and_throughput_from_a_known_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # each timed call lasts 1, 2, ..., 10 ms in turn; warm-up calls read no clock
    ticks = iter(np.cumsum([0.0] + [d for k in range(1, 11) for d in (0.0, k / 1e3)]).tolist()[1:])
    monkeypatch.setattr(latency.time, "perf_counter", lambda: next(ticks))
    calls = []
    result = measure_latency(lambda: calls.append(1), warmup=2, repeats=10, threads=3, batch=8)
    assert len(calls) == 12
    assert result.median_ms == pytest.approx(5.5) and result.mean_ms == pytest.approx(5.5)
    assert result.p90_ms == pytest.approx(9.1) and result.p99_ms == pytest.approx(9.91)
    assert (result.min_ms, result.max_ms) == pytest.approx((1.0, 10.0))
    assert result.median_ci == pytest.approx((2.0, 9.0))  # ranks 2 and 9 of 10 at 95 %
    assert result.throughput_per_s == pytest.approx(8 / 5.5e-3)
    assert (result.batch, result.repeats, result.warmup, result.threads) == (8, 10, 2, 3)
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(lambda: None, repeats=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    torch.manual_seed(0)
    model = create_model("tinyfar_c").eval()
    root = tmp_path_factory.mktemp("latency")
    onnx_path = export_onnx(model, root / "m.onnx")
    return model, onnx_path, convert_to_openvino(onnx_path, root / "m.xml")


def test_each_runtimes_bound_call_runs_the_model_on_the_bound_input(exported: tuple) -> None:
    model, onnx_path, xml = exported
    x = np.random.default_rng(0).standard_normal((2, 3, 112, 112), dtype=np.float32)
    ort, ov, pt = onnx_runner(onnx_path), openvino_runner(xml), torch_runner(model)
    expected = ort(x)
    np.testing.assert_allclose(ort.prepare(x)().copy_outputs_to_cpu()[0], expected, atol=1e-4)
    first, second = ov.prepare(x), ov.prepare(x[::-1].copy())  # each bound call keeps its own input
    np.testing.assert_allclose(np.asarray(first()[0]), expected, atol=1e-3)
    np.testing.assert_allclose(np.asarray(second()[0]), expected[::-1], atol=1e-3)
    np.testing.assert_allclose(pt.prepare(x)().numpy(), expected, atol=1e-3)
    timed = time_runner(ov, (1, 3), warmup=1, repeats=4)
    assert sorted(timed) == [1, 3] and all(r.batch == b and r.repeats == 4 for b, r in timed.items())
    assert timed[3].throughput_per_s == pytest.approx(3e3 / timed[3].median_ms)


def test_benchmark_app_times_the_same_ir(exported: tuple) -> None:
    _, _, xml = exported
    try:
        result = run_benchmark_app(xml, batch=2, input_size=(112, 112), threads=1, seconds=1)
    except BenchmarkAppUnavailable as e:  # pragma: no cover - openvino ships it; a broken install says so here
        pytest.fail(str(e))
    assert result.median_ms > 0 and result.throughput_per_s > 0 and result.batch == 2
    assert result.command[result.command.index("-data_shape") + 1] == "[2,3,112,112]"
    assert difference(5.5, 5.0) == pytest.approx(0.1)
    with pytest.raises(RuntimeError, match="benchmark_app on .* failed"):
        run_benchmark_app(xml.with_name("missing.xml"), batch=1, input_size=(112, 112), seconds=1)


def test_latency_table_rows_per_artifact_and_batch() -> None:
    from factory.evaluate.tables import latency_table

    def timed(ms: float, batch: int) -> dict:
        return {"median_ms": ms, "median_ci": [ms - 0.1, ms + 0.2], "p90_ms": ms + 1, "p99_ms": ms + 2} | {
            "throughput_per_s": batch * 1e3 / ms
        }

    metrics = {
        "order": ["teacher", "onnx_fp32", "openvino_int8"],
        "artifacts": {
            "teacher": {},
            "onnx_fp32": {"latency_by_batch": {"1": timed(2.0, 1)}},
            "openvino_int8": {
                "latency_by_batch": {"1": timed(1.1, 1), "32": timed(40.0, 32)},
                "benchmark_app": {"1": {"median_ms": 1.0, "difference": 0.1}, "32": {"error": "benchmark_app gone"}},
            },
        },
    }
    lines = latency_table(metrics).splitlines()
    assert lines[0].split()[-4:] == ["ms", "difference", "within", "10%"]
    assert lines[2].split() == ["onnx_fp32", "1", "2.00", "[1.90,", "2.20]", "3.00", "4.00", "500", "-", "-", "-"]
    assert lines[3].split()[-4:] == ["1.00", "+10.0", "%", "yes"]  # the bound itself agrees
    assert lines[4].split()[:2] == ["openvino_int8", "32"] and "failed" in lines[4] and "gone" in lines[4]
    metrics["artifacts"]["openvino_int8"]["benchmark_app"]["1"]["difference"] = -0.15
    assert latency_table(metrics).splitlines()[3].split()[-4:] == ["1.00", "-15.0", "%", "no"]
    assert latency_table({"order": ["teacher"], "artifacts": {"teacher": {}}}) == ""


def test_a_runner_without_prepare_is_timed_through_its_call() -> None:
    from factory.runtime.contract import ModelContract

    class Plain:
        contract, threads, calls = ModelContract(input_size=(8, 8), embedding_dim=4), 2, []

        def __call__(self, x: np.ndarray) -> np.ndarray:
            self.calls.append(x.shape)
            return np.zeros((len(x), 4), np.float32)

    runner = Plain()
    timed = time_runner(runner, (1, 5), warmup=1, repeats=2)
    assert runner.calls == [(1, 3, 8, 8)] * 3 + [(5, 3, 8, 8)] * 3 and timed[5].threads == 2
