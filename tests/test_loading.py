"""Loading what users have: insightface weights, safetensors, black-box teachers; and `factory embed`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from helpers import randomise_stats
from PIL import Image

from factory.cli import main
from factory.data.world.renderer import ProceduralFaceWorld
from factory.data.world.splits import unlabelled_batch
from factory.export.onnx import export_onnx
from factory.export.openvino import convert_to_openvino
from factory.models.checkpoint import CheckpointMismatchError, save_model
from factory.models.external import (
    RunnerModule,
    TorchScriptModule,
    load_any_model,
    load_backbone,
    load_teacher,
    read_state_dict,
)
from factory.models.zoo import create_model
from factory.pipeline.stage import BuiltArtifact, StageContext
from factory.recipe import load_recipe
from factory.runtime.contract import ModelContract
from factory.train.stage import TEACHER_FILE, adopt_teacher

ROOT = Path(__file__).resolve().parents[1]


def cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def mbf() -> torch.nn.Module:
    model = create_model("mbf").eval()
    randomise_stats(model, seed=1)
    return model


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))


def test_insightface_state_dict_with_ddp_prefix_loads_strictly(mbf, x, tmp_path: Path) -> None:
    # What arcface_torch writes: a plain backbone state_dict (here as saved from a DDP-wrapped model).
    torch.save({f"module.{k}": v for k, v in mbf.state_dict().items()}, tmp_path / "backbone.pth")
    loaded = load_backbone("mbf", tmp_path / "backbone.pth").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), mbf(x))
    assert loaded.contract.std == (127.5,) * 3
    legacy = load_backbone("mbf", tmp_path / "backbone.pth", normalization="legacy128")
    assert legacy.contract.std == (128.0,) * 3 and legacy.contract.mean == (127.5,) * 3


def test_safetensors_and_wrapped_state_dicts(mbf, x, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in mbf.state_dict().items()}, str(tmp_path / "m.safetensors"))
    torch.save({"state_dict": mbf.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("m.safetensors", "wrapped.pt"):
        loaded = load_backbone("mbf", tmp_path / name).eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), mbf(x)), name
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        read_state_dict(tmp_path / "bad.safetensors")


def test_wrong_architecture_lists_the_differences(mbf, tmp_path: Path) -> None:
    torch.save(mbf.state_dict(), tmp_path / "mbf.pth")
    with pytest.raises(CheckpointMismatchError, match=r"mbf\.pth does not fit model 'mobilefacenet'") as err:
        load_backbone("mobilefacenet", tmp_path / "mbf.pth")
    assert "shape differences" in str(err.value)
    with pytest.raises(ValueError, match="holds bare weights: name the architecture"):
        load_any_model(tmp_path / "mbf.pth")


def test_onnx_black_box_runs_like_the_torch_model(mbf, x, tmp_path: Path) -> None:
    path = export_onnx(mbf, tmp_path / "mbf.onnx")
    teacher = load_any_model(path)
    assert isinstance(teacher, RunnerModule) and teacher.contract == mbf.contract
    with torch.no_grad():
        assert cosine(teacher(x), mbf(x)).min() > 0.9999
    # A foreign ONNX file without the factory's metadata: the declared contract is used.
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    declared = ModelContract(std=(128.0,) * 3)
    assert load_any_model(tmp_path / "foreign.onnx", contract=declared).contract == declared
    assert load_any_model(tmp_path / "foreign.onnx").contract == ModelContract()


def test_torchscript_black_box(mbf, x, tmp_path: Path) -> None:
    with torch.no_grad():
        torch.jit.trace(mbf, x[:1]).save(str(tmp_path / "teacher.pt"))  # a .pt that is TorchScript, not a state_dict
    teacher = load_any_model(tmp_path / "teacher.pt", contract=mbf.contract)
    assert isinstance(teacher, TorchScriptModule)
    with torch.no_grad():
        assert torch.allclose(teacher(x), mbf(x), atol=1e-5)


def stage(tmp_path: Path, checkpoint: Path, model: str) -> StageContext:
    recipe = load_recipe(
        ROOT / "recipes" / "tinyfar_synthdistill.yaml", [f"teacher.checkpoint={checkpoint}", f"teacher.model={model}"]
    )
    work = tmp_path / "stage"
    work.mkdir(parents=True)
    return StageContext(config={"teacher": recipe.teacher}, work_dir=work, inputs={}, recipe=recipe)


def test_teacher_stage_adopts_insightface_weights_and_onnx_files(mbf, x, tmp_path: Path) -> None:
    torch.save(mbf.state_dict(), tmp_path / "backbone.pth")
    ctx = stage(tmp_path / "a", tmp_path / "backbone.pth", "mbf")
    made = adopt_teacher(ctx, tmp_path / "backbone.pth")
    assert (ctx.work_dir / TEACHER_FILE).is_file() and made.metrics["model"] == "mbf"
    assert len(made.metrics["sha256"]) == 64
    (artifact,) = made.artifacts
    assert artifact.reference and artifact.runtime == "torch" and artifact.files == (TEACHER_FILE,)
    with torch.no_grad():
        assert torch.equal(load_teacher(BuiltArtifact(artifact, ctx.work_dir)).eval()(x), mbf(x))

    onnx_path = export_onnx(mbf, tmp_path / "teacher_src.onnx")
    ctx = stage(tmp_path / "b", onnx_path, "mbf")
    made = adopt_teacher(ctx, onnx_path)
    (artifact,) = made.artifacts
    assert made.metrics["black_box"] and artifact.files == ("teacher.onnx",)
    assert artifact.contract == mbf.contract.to_dict()  # a black box's declared contract travels in its record
    built = BuiltArtifact(artifact, ctx.work_dir)
    with torch.no_grad():
        assert cosine(load_teacher(built)(x), mbf(x)).min() > 0.9999
    # The same record runs through the registered torch runtime, as validation runs it.
    emb = built.runner()(x.numpy())
    with torch.no_grad():
        assert cosine(torch.from_numpy(emb), mbf(x)).min() > 0.9999


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    images = unlabelled_batch(ProceduralFaceWorld(seed=0), 5, step=0, seed=0)["images"].numpy()
    for i, name in enumerate(["e", "b", "d", "a", "c"]):
        Image.fromarray(images[i].transpose(1, 2, 0)).save(folder / f"{name}.png")
    return folder


def test_embed_agrees_across_torch_onnx_and_openvino(faces: Path, tmp_path: Path) -> None:
    model = create_model("iresnet_nano").eval()  # fresh init that still tells faces apart (PReLU: rewrite path too)
    save_model(tmp_path / "student.pt", model)
    onnx_path = export_onnx(model, tmp_path / "student.onnx")
    xml_path = convert_to_openvino(onnx_path, tmp_path / "student.xml")
    runs = {
        "torch": ["--model", "iresnet_nano", "--weights", str(tmp_path / "student.pt")],
        "onnx": ["--artifact", str(onnx_path)],
        "openvino": ["--artifact", str(xml_path)],
    }
    out = {}
    for name, args in runs.items():
        result = CliRunner().invoke(main, ["embed", str(faces), *args, "-o", str(tmp_path / f"{name}.npz")])
        assert result.exit_code == 0, result.output
        with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as data:
            out[name] = (data["embeddings"], data["paths"])
    embeddings, paths = out["torch"]
    assert embeddings.shape == (5, 512) and embeddings.dtype == np.float32
    assert [Path(p).name for p in paths] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert np.linalg.norm(embeddings, axis=1) == pytest.approx(np.ones(5), abs=1e-5)
    assert (embeddings @ embeddings.T)[~np.eye(5, dtype=bool)].max() < 0.99  # distinct faces, distinct embeddings
    for name in ("onnx", "openvino"):
        assert cosine(out[name][0], embeddings).min() > 0.9999, name
    flipped = tmp_path / "flip.npz"
    assert CliRunner().invoke(main, ["embed", str(faces), *runs["onnx"], "--flip", "-o", str(flipped)]).exit_code == 0
    with np.load(flipped) as data:
        assert cosine(data["embeddings"], embeddings).max() < 0.9999  # the mirror really went in


def test_embed_refuses_unaligned_images_and_bad_arguments(faces: Path, tmp_path: Path) -> None:
    Image.new("RGB", (250, 250)).save(tmp_path / "raw.png")
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "raw.png"), "--model", "tinyfar_c", "-o", "o.npz"])
    assert result.exit_code == 2 and "raw.png: image is 250×250, not an aligned 112×112 face crop" in result.output
    result = CliRunner().invoke(main, ["embed", str(faces), "-o", str(tmp_path / "o.npz")])
    assert result.exit_code == 2 and "exactly one of --model" in result.output


def test_models_cli_lists_and_describes(tmp_path: Path) -> None:
    listing = CliRunner().invoke(main, ["models", "list"])
    assert listing.exit_code == 0
    assert "mobilefacenet" in listing.output and "1,200,512" in listing.output and "442.3" in listing.output
    info = CliRunner().invoke(main, ["models", "info", "tinyfar_a", "--json"])
    data = json.loads(info.output)
    assert data["params"] == 5_562_844 and round(data["flops"] / 1e6, 1) == 253.5
    assert data["input_size"] == [112, 112] and data["embedding_dim"] == 512 and data["std"] == [127.5] * 3
    unknown = CliRunner().invoke(main, ["models", "info", "tinyfar"])
    assert unknown.exit_code == 2 and "did you mean" in unknown.output
