"""Calibration faces: drawn from any source, balanced over groups, refused where they touch the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import encode_png

from factory.data.benchmark import PairBenchmark, build_benchmark
from factory.data.calibration import (
    calibration_warnings,
    draw_calibration,
    prove_apart,
    refuse_benchmark_files,
)
from factory.data.sources import FilesSourceConfig, ProceduralSetSourceConfig, ProceduralSourceConfig
from factory.data.world.renderer import ProceduralFaceWorld
from factory.recipe.schema import CalibrationConfig


@pytest.fixture(scope="module")
def world() -> ProceduralFaceWorld:
    return ProceduralFaceWorld(seed=0)


@pytest.fixture(scope="module")
def bench(world: ProceduralFaceWorld) -> PairBenchmark:
    return build_benchmark(world, pairs_per_group=40, seed=0, progress=False)


def write_faces(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        (folder / f"{i:03d}.png").write_bytes(encode_png(image))
    return folder


def test_procedural_calibration_is_equal_per_group_distinct_and_seeded(world: ProceduralFaceWorld) -> None:
    cfg = CalibrationConfig(source=ProceduralSourceConfig(), images=22)
    first = draw_calibration(cfg, world, seed=3)
    assert first.images.shape == (22, 3, 112, 112) and first.images.dtype == np.uint8
    # 22 over 4 groups: 6, 6, 5, 5
    assert first.group_counts(world.group_names) == {"alpha": 6, "beta": 6, "gamma": 5, "delta": 5}
    assert len({image.tobytes() for image in first.images}) == 22
    assert first.description == "procedural:calibration"
    np.testing.assert_array_equal(draw_calibration(cfg, world, seed=3).images, first.images)
    assert not np.array_equal(draw_calibration(cfg, world, seed=4).images, first.images)


def test_procedural_calibration_is_apart_from_the_procedural_benchmark(
    world: ProceduralFaceWorld, bench: PairBenchmark
) -> None:
    cfg = CalibrationConfig(source=ProceduralSourceConfig(), images=16)
    calibration = draw_calibration(cfg, world, seed=0)
    proof = prove_apart(calibration, bench.images, cfg.source, None)
    assert proof["identical_images"] == 0 and proof["images_compared"] == 16
    assert proof["benchmark_images_compared"] == len(bench.images)
    assert "split 'calibration'" in proof["identities"] and "'benchmark'" in proof["identities"]


def test_benchmark_faces_among_the_calibration_are_refused_mirrored_too(
    world: ProceduralFaceWorld, bench: PairBenchmark
) -> None:
    calibration = draw_calibration(CalibrationConfig(source=ProceduralSourceConfig(), images=8), world, seed=0)
    calibration.images[5] = bench.images[17][..., ::-1]  # a mirrored benchmark face
    with pytest.raises(
        ValueError,
        match=r"1 of the 8 calibration images are benchmark images \(calibration image 5 is benchmark image 17",
    ):
        prove_apart(calibration, bench.images, ProceduralSourceConfig(), None)


def test_files_calibration_draws_distinct_files_and_refuses_too_few(tmp_path: Path, world: ProceduralFaceWorld) -> None:
    faces = draw_calibration(CalibrationConfig(source=ProceduralSourceConfig(), images=10), world, seed=1).images
    folder = write_faces(tmp_path / "faces", faces)
    source = FilesSourceConfig(path=str(folder))
    drawn = draw_calibration(CalibrationConfig(source=source, images=10, balance="source"), world, seed=0)
    # every file once (without replacement), no groups
    assert sorted(image.tobytes() for image in drawn.images) == sorted(image.tobytes() for image in faces)
    assert drawn.group_counts(world.group_names)["unknown"] == 10
    with pytest.raises(ValueError, match=r"data.calibration.images: 11 asked, but .*faces holds only 10 images"):
        draw_calibration(CalibrationConfig(source=source, images=11, balance="source"), world, seed=0)
    with pytest.raises(
        ValueError,
        match=r"balance: equal takes as many faces from every group, .*no sub-folders.*or set balance: source",
    ):
        draw_calibration(CalibrationConfig(source=source, images=4), world, seed=0)


def test_a_fixed_procedural_set_is_drawn_per_group_without_repeats(world: ProceduralFaceWorld) -> None:
    source = ProceduralSetSourceConfig(identities_per_group=2, images_per_identity=2)
    drawn = draw_calibration(CalibrationConfig(source=source, images=12), world, seed=0)
    assert drawn.group_counts(world.group_names) == {"alpha": 3, "beta": 3, "gamma": 3, "delta": 3}
    assert len({image.tobytes() for image in drawn.images}) == 12
    with pytest.raises(ValueError, match=r"17 asked of group 'alpha', but .* holds only 4 images of group 'alpha'"):
        draw_calibration(CalibrationConfig(source=source, images=68), world, seed=0)


def test_red_and_blue_swapped_faces_are_refused(
    tmp_path: Path, world: ProceduralFaceWorld, bench: PairBenchmark
) -> None:
    faces = draw_calibration(CalibrationConfig(source=ProceduralSourceConfig(), images=8), world, seed=2).images
    bgr = write_faces(tmp_path / "bgr", faces[:, ::-1])
    source = FilesSourceConfig(path=str(bgr))
    drawn = draw_calibration(CalibrationConfig(source=source, images=8, balance="source"), world, seed=0)
    with pytest.raises(ValueError, match=r"look like the benchmark's with red and blue swapped"):
        prove_apart(drawn, bench.images, source, None)
    rgb = write_faces(tmp_path / "rgb", faces)
    source = FilesSourceConfig(path=str(rgb))
    drawn = draw_calibration(CalibrationConfig(source=source, images=8, balance="source"), world, seed=0)
    proof = prove_apart(drawn, bench.images, source, None)
    assert proof["files_checked"] == [str(rgb)] and "not checkable" in proof["identities"]


def test_calibration_files_inside_or_around_the_benchmark_are_refused(tmp_path: Path) -> None:
    (tmp_path / "rfw" / "African").mkdir(parents=True)
    inside = FilesSourceConfig(path=str(tmp_path / "rfw" / "African"))
    with pytest.raises(ValueError, match="overlaps the benchmark"):
        refuse_benchmark_files(inside, str(tmp_path / "rfw"))
    around = FilesSourceConfig(path=str(tmp_path))
    with pytest.raises(ValueError, match="overlaps the benchmark"):
        refuse_benchmark_files(around, str(tmp_path / "rfw"))
    beside = FilesSourceConfig(path=str(tmp_path / "calibration"))
    assert refuse_benchmark_files(beside, str(tmp_path / "rfw")) == [str(tmp_path / "calibration")]


def test_dynamic_resampling_is_refused_for_calibration(world: ProceduralFaceWorld) -> None:
    cfg = CalibrationConfig(source=ProceduralSourceConfig(sampling="dynamic"), images=4)
    refused = r"sampling dynamic re-samples faces from a student.s feedback.*\(expected sampling: static\)"
    with pytest.raises(ValueError, match=refused):
        draw_calibration(cfg, world, seed=0)


def test_fewer_than_300_faces_are_warned() -> None:
    assert calibration_warnings(CalibrationConfig(images=300)) == []
    (line,) = calibration_warnings(CalibrationConfig(images=64))
    assert line.startswith("data.calibration.images: 64 faces (below 300)")
