"""The StyleGAN2-ADA adapter, against a generator object with NVlabs' interface (no real pickle needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from factory.data.world.stylegan import StyleGANSource, UntrustedGeneratorError, crop_to_template, load_stylegan2


class FakeGenerator(nn.Module):
    """NVlabs' G interface: z_dim, c_dim, w_dim, num_ws, mapping(z, c, truncation_psi), synthesis(ws, noise_mode)."""

    z_dim, c_dim, w_dim, num_ws, img_resolution = 8, 0, 8, 4, 256

    def mapping(self, z, c, truncation_psi=1.0):
        return (z * truncation_psi)[:, None, :].repeat(1, self.num_ws, 1)

    def synthesis(self, ws, noise_mode="const"):
        # White inside SynthDistill's crop window, black outside, tinted by w so identities differ.
        img = -torch.ones(len(ws), 3, 256, 256)
        img[:, :, 21:234, 22:235] = 1.0
        return img * torch.sigmoid(ws[:, 0, :3])[:, :, None, None]


def test_crop_keeps_exactly_the_synthdistill_window() -> None:
    img = -torch.ones(1, 3, 256, 256)
    img[:, :, 21:234, 22:235] = 1.0
    assert crop_to_template(img).min() == pytest.approx(1.0)  # nothing from outside the window leaks in
    assert crop_to_template(torch.zeros(2, 3, 1024, 1024)).shape == (2, 3, 112, 112)


def test_source_has_the_procedural_interface() -> None:
    source = StyleGANSource(FakeGenerator(), truncation_psi=0.7)
    gen = torch.Generator().manual_seed(0)
    z = source.sample_z(3, gen)
    w = source.mapping(z)
    assert w.shape == (3, 4, 8) and torch.allclose(w[:, 0], 0.7 * z)
    assert torch.allclose(source.mapping(z, truncation_psi=1.0)[:, 0], z)
    faces = source.synthesis(w)
    assert faces.shape == (3, 3, 112, 112) and faces.dtype == torch.uint8
    assert torch.equal(faces, source.synthesis(w))  # constant noise: deterministic
    assert not torch.equal(faces[0], faces[1])
    assert source.group_names == ["all"]


def test_pickle_needs_trust_and_the_nvlabs_code(tmp_path: Path) -> None:
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(b"not read unless trusted")
    with pytest.raises(UntrustedGeneratorError, match="runs code when loaded"):
        load_stylegan2(pkl, tmp_path, trust=False)
    with pytest.raises(FileNotFoundError, match="missing legacy.py, dnnlib, torch_utils"):
        load_stylegan2(pkl, tmp_path, trust=True)
    code = tmp_path / "stylegan2-ada-pytorch"
    (code / "dnnlib").mkdir(parents=True)
    (code / "torch_utils").mkdir()
    (code / "legacy.py").write_text(
        "import torch\n"
        "class G(torch.nn.Module):\n"
        "    z_dim = c_dim = w_dim = 0\n"
        "def load_network_pkl(f):\n"
        "    assert f.read() == b'not read unless trusted'\n"
        "    return {'G_ema': G()}\n"
    )
    try:
        generator = load_stylegan2(pkl, code, trust=True)
        assert type(generator).__name__ == "G" and not generator.training
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("legacy", None)


LEGACY = """
import torch

class G(torch.nn.Module):
    z_dim, c_dim, w_dim, num_ws = 8, 0, 8, 4

    def mapping(self, z, c, truncation_psi=1.0):
        return (z * truncation_psi)[:, None, :].repeat(1, self.num_ws, 1)

    def synthesis(self, ws, noise_mode="const"):
        img = -torch.ones(len(ws), 3, 256, 256)
        img[:, :, 21:234, 22:235] = 1.0
        return img * torch.sigmoid(ws[:, 0, :3])[:, :, None, None]

def load_network_pkl(f):
    return {"G_ema": G()}
"""


def test_a_recipe_selects_the_stylegan_source(tmp_path: Path) -> None:
    from factory.data.sources import SourceContext
    from factory.data.world.renderer import ProceduralFaceWorld
    from factory.recipe import RecipeError, load_recipe

    code = tmp_path / "stylegan2-ada-pytorch"
    (code / "dnnlib").mkdir(parents=True)
    (code / "torch_utils").mkdir()
    (code / "legacy.py").write_text(LEGACY)
    (tmp_path / "G.pkl").write_bytes(b"a pickle")
    text = f"distill:\n  source:\n    kind: stylegan\n    pickle: G.pkl\n    code_dir: {code.name}\n"
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "r.yaml")
    assert str(err.value).startswith(f"{tmp_path / 'r.yaml'}:2: distill.source.trust_pickle: a generator pickle runs")

    (tmp_path / "r.yaml").write_text(text + "    trust_pickle: true\n    truncation_psi: 0.7\n")
    cfg = load_recipe(tmp_path / "r.yaml").distill.source
    assert cfg.pickle == str(tmp_path / "G.pkl") and cfg.truncation_psi == 0.7
    where = SourceContext(ProceduralFaceWorld(seed=0), batch_size=4, seed=0, split="distill", labelled=False)
    try:
        source = cfg.open(where)
        batch = source.batch(3)
        assert batch["pixels"].shape == (4, 3, 112, 112) and batch["pixels"].dtype == torch.uint8
        assert torch.equal(batch["pixels"], source.batch(3)["pixels"])  # a pure function of the step
        assert not torch.equal(batch["pixels"], source.batch(4)["pixels"])
        with pytest.raises(ValueError, match="no identity labels"):
            cfg.open(SourceContext(ProceduralFaceWorld(seed=0), 4, 0, "teacher", labelled=True))
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("legacy", None)
