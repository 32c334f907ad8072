"""Group-aware mixing of real and synthetic sources, and the datasets that feed training from files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factory.data.formats.folders import LabelledImages
from factory.data.formats.recordio import write_insightface_pack
from factory.data.mixing import LabelledImageDataset, RecordIODataset, mix_sources, read_flat_folder


def index(name: str, per_group: dict[str, int], per_identity: int = 2) -> LabelledImages:
    paths, identities, groups = [], [], []
    for group, n in per_group.items():
        for i in range(n):
            paths.append(Path(f"/{name}/{group}/{i}.png"))
            identities.append(f"{group}-{i // per_identity}")
            groups.append(group)
    return LabelledImages(paths, identities, groups, source=name)


def test_mix_keeps_the_ratio_inside_every_group() -> None:
    real = index("real", {"a": 700, "b": 140, "c": 500})
    synthetic = index("synthetic", {"a": 1000, "b": 1000, "c": 30, "d": 50})
    mixture = mix_sources({"real": real, "synthetic": synthetic}, {"real": 0.7, "synthetic": 0.3}, seed=0)
    rows = {(r["source"], r["group"]): r for r in mixture.composition()}
    assert mixture.images.group_names == ["a", "b", "c"]  # only groups both sources have
    for group in ("a", "b", "c"):
        real_n, synth_n = rows[("real", group)]["images"], rows[("synthetic", group)]["images"]
        assert real_n / (real_n + synth_n) == pytest.approx(0.7, abs=0.01), group
    # Group c is limited by its 30 synthetic images: budget 100 -> 70 real + 30 synthetic.
    assert (rows[("real", "c")]["images"], rows[("synthetic", "c")]["images"]) == (70, 30)
    assert 0 < rows[("real", "a")]["identities"] <= 350  # 700 real images of group a are 350 identities
    assert len(set(mixture.images.paths)) == len(mixture.images)  # no image twice
    assert all(i.startswith(("real/", "synthetic/")) for i in mixture.images.identities)
    again = mix_sources({"real": real, "synthetic": synthetic}, {"real": 0.7, "synthetic": 0.3}, seed=0)
    assert again.images.paths == mixture.images.paths
    table = mixture.composition_table()
    assert "real" in table and "70.0%" in table and "30.0%" in table


def test_mix_rejects_bad_ratios() -> None:
    real = index("real", {"a": 10})
    with pytest.raises(ValueError, match="sum to 1"):
        mix_sources({"real": real, "s": real}, {"real": 0.7, "s": 0.7})
    with pytest.raises(ValueError, match="must name exactly the sources"):
        mix_sources({"real": real}, {"real": 0.5, "s": 0.5})
    with pytest.raises(ValueError, match="share no group"):
        mix_sources({"real": real, "s": index("s", {"b": 5})}, {"real": 0.5, "s": 0.5})


def png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((112, 112, 3), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_datasets_decode_files_and_records_in_dataloader_workers(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / "flat").mkdir(exist_ok=True)
        (tmp_path / "flat" / f"{i}.png").write_bytes(png(10 * i))
    paths = read_flat_folder(tmp_path / "flat")
    files = LabelledImageDataset(LabelledImages(paths, ["x", "y", "x", "y"], ["all"] * 4))
    image, label = files[1]
    assert image.shape == (3, 112, 112) and image.dtype == torch.uint8 and int(image[0, 0, 0]) == 10 and label == 1
    write_insightface_pack(tmp_path / "t.rec", [png(v) for v in (1, 2, 3, 4)], [0, 0, 1, 1])
    records = RecordIODataset(tmp_path / "t.rec", flip=True)
    loader = torch.utils.data.DataLoader(records, batch_size=2, num_workers=2)
    batches = list(loader)
    values = sorted(int(v) for b, _ in batches for v in b[:, 0, 0, 0])
    assert values == [1, 2, 3, 4] and sorted(int(v) for _, lab in batches for v in lab) == [0, 0, 1, 1]
    (tmp_path / "flat" / "bad.png").write_bytes(png(0)[:50])
    with pytest.raises(ValueError, match=r"bad\.png: cannot decode image"):
        LabelledImageDataset(LabelledImages([tmp_path / "flat" / "bad.png"], ["x"], ["all"]))[0]


def test_data_mix_cli_prints_composition_and_writes_a_list(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from factory.cli import main
    from factory.data.formats.folders import read_image_list

    for source, n in (("real", 14), ("synth", 10)):
        for i in range(n):
            for group in ("g1", "g2"):
                folder = tmp_path / source / group / f"id{i // 2}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{i}.png").write_bytes(png(i))
    result = CliRunner().invoke(
        main,
        [
            "data",
            "mix",
            f"real={tmp_path / 'real'}:0.7",
            f"synth={tmp_path / 'synth'}:0.3",
            "--out",
            str(tmp_path / "m.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "70.0%" in result.output and "30.0%" in result.output
    mixed = read_image_list(tmp_path / "m.csv")
    assert len(mixed) == 2 * 20 and mixed.group_names == ["g1", "g2"]
    bad = CliRunner().invoke(main, ["data", "mix", "real-no-ratio"])
    assert bad.exit_code == 2 and "NAME=PATH:RATIO" in bad.output
