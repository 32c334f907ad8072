"""A user's StyleGAN2-ADA generator behind the procedural world's interface.

``mapping`` gives ``w``, ``synthesis`` gives aligned uint8 faces: online synthetic data and SynthDistill's latent
re-sampling work on it unchanged.

A NVlabs generator pickle *is code*: unpickling it imports and runs classes from the NVlabs repository. So it is
loaded only when the recipe names the user's clone of that code (``stylegan2-ada-pytorch``, holding ``legacy.py``,
``dnnlib/`` and ``torch_utils/``) and sets an explicit trust flag; the factory never imports it otherwise.

Outputs are cropped as SynthDistill does (``../shared/REFERENCE.md`` §4): FFHQ 256×256 rows 21:234, cols 22:235
(scaled for other resolutions), bilinear resize to 112×112, so the eyes land on the arcface template.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# (top, bottom, left, right) of the 112-crop on a 256×256 FFHQ image.
FFHQ_CROP_256 = (21, 234, 22, 235)
OUTPUT_SIZE = 112


class UntrustedGeneratorError(PermissionError):
    """A generator pickle was about to be loaded without the recipe's explicit trust flag."""


def load_stylegan2(pickle_path: str | os.PathLike[str], code_dir: str | os.PathLike[str], trust: bool = False) -> Any:
    """``G_ema`` from a NVlabs StyleGAN2-ADA pickle, using the user's clone of NVlabs' code to unpickle it.

    Raises:
        UntrustedGeneratorError: ``trust`` is false (nothing was read).
        FileNotFoundError: the pickle or the code folder (``legacy.py``, ``dnnlib``, ``torch_utils``) is missing.
    """
    pickle_path, code_dir = Path(pickle_path), Path(code_dir)
    if not trust:
        raise UntrustedGeneratorError(
            f"{pickle_path}: a StyleGAN generator pickle runs code when loaded; check where it comes from, then set "
            "trust_pickle: true in the recipe"
        )
    if not pickle_path.is_file():
        raise FileNotFoundError(f"{pickle_path}: no such generator pickle (expected a NVlabs network-snapshot .pkl)")
    missing = [n for n in ("legacy.py", "dnnlib", "torch_utils") if not (code_dir / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{code_dir}: not a clone of NVlabs/stylegan2-ada-pytorch (missing {', '.join(missing)})"
        )
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    import legacy  # the user's NVlabs code, found through code_dir

    with open(pickle_path, "rb") as f:
        return legacy.load_network_pkl(f)["G_ema"].eval().requires_grad_(False)


def crop_to_template(images: Tensor) -> Tensor:
    """SynthDistill's crop of FFHQ-aligned generator output (float, any square resolution) to 112×112."""
    size = images.shape[-1]
    top, bottom, left, right = (round(v * size / 256) for v in FFHQ_CROP_256)
    crop = images[..., top:bottom, left:right]
    return F.interpolate(crop, size=(OUTPUT_SIZE, OUTPUT_SIZE), mode="bilinear", align_corners=False)


class StyleGANSource:
    """A NVlabs-style generator as a synthetic face source with the procedural world's interface.

    The generator offers ``z_dim``, ``c_dim``, ``w_dim``, ``mapping(z, c, truncation_psi)`` and ``synthesis(ws)``.
    It has no demographic groups: one group, ``all``.
    """

    resolution = OUTPUT_SIZE

    def __init__(self, generator: Any, truncation_psi: float = 1.0, noise_mode: str = "const") -> None:
        if getattr(generator, "c_dim", 0):
            raise ValueError("conditional StyleGAN generators (c_dim > 0) are not supported: give an unconditional one")
        self.generator = generator
        self.z_dim = generator.z_dim
        self.w_dim = generator.w_dim
        self.truncation_psi = truncation_psi
        self.noise_mode = noise_mode
        self.group_names = ["all"]

    def sample_z(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` latents ``N×z_dim`` ~ N(0, I)."""
        return torch.randn(n, self.z_dim, generator=generator)

    def mapping(self, z: Tensor, group: Tensor | None = None, truncation_psi: float | None = None) -> Tensor:
        """``z`` → ``ws`` (``N×num_ws×w_dim``); ``group`` is accepted for interface parity and ignored."""
        del group
        psi = self.truncation_psi if truncation_psi is None else truncation_psi
        with torch.no_grad():
            return self.generator.mapping(z, None, truncation_psi=psi)

    def w_spread(self, group: Tensor | None = None) -> float:
        """Scale of a move in ``W``: 1, SynthDistill adds N(0, I) in the generator's own ``W`` (the paper's c = 1)."""
        del group
        return 1.0

    def synthesis(self, w: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``ws`` → uint8 RGB ``N×3×112×112`` on the arcface template (``generator`` unused: noise is constant)."""
        del generator
        with torch.no_grad():
            images = self.generator.synthesis(w, noise_mode=self.noise_mode)
        faces = crop_to_template(images.float())
        return ((faces + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
