"""The procedural face renderer: identities of the taxonomy's groups as aligned 112×112 RGB cartoon faces.

:class:`ProceduralFaceWorld` offers the interface of a StyleGAN2-ADA generator, so everything written for one
(SynthDistill's re-sampling in W included) runs on it:

- ``mapping(z, group) -> w``: an identity latent becomes the identity's attributes in renderer units (face shape,
  eyes, brows, nose, mouth, skin/hair/iris colour, hair style, marks, and the capture conditions the person is
  photographed in). The group sets the mean and spread of every attribute (a YAML taxonomy,
  :func:`~factory.data.world.taxonomy.load_taxonomy`); a fixed random orthonormal projection mixes ``z`` so no
  single ``z`` coordinate is one attribute.
- ``synthesis(w, generator) -> uint8 images``: renders the identity with nuisances drawn from ``generator``, like
  StyleGAN's per-layer noise: pose jitter, expression, lighting, colour cast, defocus, background and sensor noise,
  and, for groups that declare within-identity variability, a per-image jitter of the identity's own attributes.

Rendering is vectorised over the batch in the canonical (un-posed) frame, where most shapes are separable in x and y,
so a mask costs one broadcast op; colours are composited with one batched matmul; the pose is applied at the end
with one ``grid_sample``. Defocus is rendered as per-image edge softness rather than a convolution (convolutions on
CPU cost more than the whole face). Landmarks sit on the arcface 5-point template up to identity and pose jitter.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from factory.data.world.seeding import make_generator
from factory.data.world.taxonomy import COLOURS, FEATURES, NUISANCES, GroupSpec, apply_difficulty, load_taxonomy
from factory.runtime.contract import ARCFACE_TEMPLATE

if TYPE_CHECKING:
    from factory.recipe import WorldConfig

RESOLUTION = 112
Z_DIM = 64
COLOUR_AXES = ("lightness", "warmth", "tint")
# rgb = mean + lightness * (1, 1, 1) + warmth * (1, 0, -1) + tint * (-1/2, 1, -1/2)
_COLOUR_BASIS = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [-0.5, 1.0, -0.5]])
_COLOUR_UNIT = 30.0
_NUISANCE_UNIT = 0.5
W_NAMES: tuple[str, ...] = (
    *FEATURES,
    *(f"{c}_{a}" for c in COLOURS for a in COLOUR_AXES),
    *(f"capture_{n}" for n in NUISANCES),
    # Last, so the coordinates before it keep their index (and the world's projection its first rows).
    "within_identity",
)
_IDENTITY_DIM = len(FEATURES) + len(COLOURS) * len(COLOUR_AXES)  # the coordinates a within-identity jitter moves
_W_INDEX = {name: i for i, name in enumerate(W_NAMES)}

_EYE_Y = (ARCFACE_TEMPLATE[0][1] + ARCFACE_TEMPLATE[1][1]) / 2
_EYE_DX = (ARCFACE_TEMPLATE[1][0] - ARCFACE_TEMPLATE[0][0]) / 2
_NOSE_Y = ARCFACE_TEMPLATE[2][1]
_MOUTH_Y = (ARCFACE_TEMPLATE[3][1] + ARCFACE_TEMPLATE[4][1]) / 2
_MIN_SLOPE_COS = 0.35
_CHUNK = 32  # images rendered at once (see synthesis)
_CENTRE_X = (ARCFACE_TEMPLATE[0][0] + ARCFACE_TEMPLATE[1][0]) / 2
# Rows where the small features can land (identity offsets, expression); they are rendered on these bands only.
_POSE_X, _POSE_Y = _CENTRE_X, (_EYE_Y + _MOUTH_Y) / 2  # centre of rotation and scale
_EYE_ROWS = (22, 68)
_NOSE_ROWS = (46, 86)
_CHEEK_ROWS = (50, 90)
_MOLE_ROWS = (50, 110)
_MOUTH_ROWS = (72, 112)


def _ellipse_rows(v: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row description of an ellipse with half-axes ``a`` (x) and ``b`` (y) for :func:`_row_mask`.

    ``v`` is ``(y - centre_y) / b`` per row. Returns ``(d, k)`` such that a point at horizontal distance ``t`` from
    the axis lies ``d - k * t`` pixels inside the outline, to first order: ``k`` (the cosine of the outline's slope)
    makes edges equally soft all round. It is floored so that the linearisation cannot leak coverage along whole
    rows near the top and bottom; rows beyond them get ``d`` = minus the vertical gap.
    """
    s2 = (1.0 - v.square()).clamp(min=0.0)
    s = s2.sqrt()
    den = torch.sqrt(b.square() * s2 + a.square() * v.square()).clamp(min=1e-6)
    k = (b * s / den).clamp(min=_MIN_SLOPE_COS)
    d = torch.where(s2 > 0, k * a * s, -b * (v.abs() - 1.0))
    return d, k


def _row_mask(t: Tensor, d: Tensor, k: Tensor, inv_w: Tensor) -> Tensor:
    """Coverage of a shape given per row (``d``, ``k`` ``N×H×1``) at row distances ``t`` (``N×1×W``) from its axis.

    One broadcast product and two in-place ops for the whole batch; ``inv_w`` (``N×1×1``) is 1 / the edge width in
    pixels, so a larger width renders the image out of focus.
    """
    # Broadcasting addcmul is several times slower than a broadcast mul plus in-place add on CPU.
    return (t * (-k * inv_w)).add_(d * inv_w + 0.5).clamp_(0.0, 1.0)


def _col_mask(y: Tensor, centre: Tensor, half: Tensor, inv_w: Tensor) -> Tensor:
    """Coverage of a band ``|y - centre(x)| < half(x)`` (``centre``, ``half`` ``N×1×W``; ``half`` < 0: empty)."""
    return (y - centre).abs_().mul_(-inv_w).add_(half * inv_w + 0.5).clamp_(0.0, 1.0)


def _within_identity(w: Tensor) -> Tensor:
    """Each image's within-identity jitter (a fraction of the typical identity spread) from its ``w``."""
    return (_NUISANCE_UNIT * w[:, _W_INDEX["within_identity"]]).clamp(0.0, 4.0)


def _signed_sqrt(q: Tensor) -> Tensor:
    """A rounded profile ``sqrt(q)`` where ``q`` >= 0 that drops steeply below zero beyond the shape's ends.

    Used as the half-height of column masks, so outside its horizontal extent a shape leaves no trace.
    """
    return torch.where(q >= 0, q.clamp(min=0.0).sqrt(), q * 16.0)


class ProceduralFaceWorld:
    """Generator of aligned 112×112 RGB cartoon faces with a StyleGAN-like ``mapping``/``synthesis`` interface.

    Attributes:
        z_dim: size of the identity latent ``z``.
        w_dim: size of ``w`` (one coordinate per attribute, named in :data:`W_NAMES`).
        resolution: image side (112).
        groups: the group taxonomy.
        group_names: group names, index = group id.
        seed: seed of the world's own fixed random parameters.
    """

    resolution: int = RESOLUTION

    def __init__(self, groups: list[GroupSpec] | None = None, seed: int = 0) -> None:
        """Build the world from a taxonomy (default: the built-in one); ``seed`` fixes its random parameters."""
        self.groups = list(groups) if groups is not None else load_taxonomy()
        if not self.groups:
            raise ValueError("the procedural world needs at least one group")
        self.group_names = [g.name for g in self.groups]
        if len(set(self.group_names)) != len(self.group_names):
            raise ValueError(f"duplicate group names in {self.group_names}")
        self.seed = seed
        self.z_dim = Z_DIM
        self.w_dim = len(W_NAMES)
        gen = make_generator("procedural-world", seed)
        # Orthonormal rows: P @ z ~ N(0, I) in w, every attribute a mix of all z coordinates.
        # within_identity (the last coordinate) gets its own row below.
        q, _ = torch.linalg.qr(torch.randn(self.z_dim, self.w_dim - 1, generator=gen, dtype=torch.float64))
        self._projection = q.T.float().contiguous()  # (w_dim - 1, z_dim)
        # Sensor-noise tiles and a freckle pattern: drawing fresh per-pixel noise costs more than rendering a face.
        self._noise_bank = (torch.randn(256, RESOLUTION, RESOLUTION, generator=gen) * 32).clamp_(-127, 127)
        self._noise_bank = self._noise_bank.to(torch.int8)
        dots = (torch.rand(RESOLUTION, RESOLUTION, generator=gen) > 0.93).float()
        self._freckles = F.avg_pool2d(dots[None, None], 3, stride=1, padding=1)[0, 0] * 3.0
        # The within_identity row is drawn after everything above and made orthogonal to the other rows, so those
        # (and every w coordinate, image and noise tile drawn from them) are what they were before it existed.
        extra = torch.randn(self.z_dim, generator=gen, dtype=torch.float64)
        extra -= q @ (q.T @ extra)
        self._within_row = (extra / extra.norm()).float()
        self._mean, self._std = self._group_tables()
        self._jitter_unit = self._jitter_units()
        self._centre = torch.tensor([v[0] for v in FEATURES.values()])
        self._unit = torch.tensor([v[1] for v in FEATURES.values()])
        self._lo = torch.tensor([v[2] for v in FEATURES.values()])
        self._hi = torch.tensor([v[3] for v in FEATURES.values()])
        self._xs = torch.arange(RESOLUTION, dtype=torch.float32)

    def _group_tables(self) -> tuple[Tensor, Tensor]:
        """Per-group mean and standard deviation of every w coordinate, in w units."""
        mean = torch.zeros(len(self.groups), self.w_dim)
        std = torch.zeros(len(self.groups), self.w_dim)
        inverse = torch.linalg.inv(_COLOUR_BASIS.T.double()).float()  # rgb -> (lightness, warmth, tint)
        for g, spec in enumerate(self.groups):
            for name, (centre, unit, _, _) in FEATURES.items():
                m, s = spec.features[name]
                mean[g, _W_INDEX[name]] = (m - centre) / unit
                std[g, _W_INDEX[name]] = s * spec.identity_spread / unit
            for colour in COLOURS:
                c = spec.colours[colour]
                axes = inverse @ torch.tensor(c.mean_rgb)
                stds = (c.lightness_std, c.warmth_std, c.tint_std)
                for k, axis in enumerate(COLOUR_AXES):
                    i = _W_INDEX[f"{colour}_{axis}"]
                    mean[g, i] = axes[k] / _COLOUR_UNIT
                    std[g, i] = stds[k] * spec.identity_spread / _COLOUR_UNIT
            for name in NUISANCES:
                i = _W_INDEX[f"capture_{name}"]
                mean[g, i] = (spec.nuisance[name] - 1.0) / _NUISANCE_UNIT
                std[g, i] = spec.nuisance_spread * spec.nuisance[name] / _NUISANCE_UNIT
            i = _W_INDEX["within_identity"]
            mean[g, i] = spec.within_identity / _NUISANCE_UNIT
            std[g, i] = spec.nuisance_spread * spec.within_identity / _NUISANCE_UNIT
        return mean, std

    def _jitter_units(self) -> Tensor:
        """Per identity coordinate, the world's typical spread between identities (w units, mean over groups).

        A within-identity jitter of 1 moves every attribute by this much per image. It is the declared spread
        before ``identity_spread``, so that knob and ``within_identity`` stay independent; and it is the same for
        every group (``synthesis`` sees ``w``, not the group), so a group's jitter is comparable with another's.
        """
        declared = torch.zeros(len(self.groups), _IDENTITY_DIM)
        for g, spec in enumerate(self.groups):
            for name, (_, unit, _, _) in FEATURES.items():
                declared[g, _W_INDEX[name]] = spec.features[name][1] / unit
            for colour in COLOURS:
                c = spec.colours[colour]
                for k, axis in enumerate(COLOUR_AXES):
                    stds = (c.lightness_std, c.warmth_std, c.tint_std)
                    declared[g, _W_INDEX[f"{colour}_{axis}"]] = stds[k] / _COLOUR_UNIT
        return declared.mean(dim=0)

    # -- StyleGAN-like interface ---------------------------------------------------------------------------------

    def sample_z(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` identity latents ``N×z_dim`` ~ N(0, I)."""
        return torch.randn(n, self.z_dim, generator=generator)

    def mapping(self, z: Tensor, group: Tensor, truncation_psi: float = 1.0) -> Tensor:
        """Identity latents ``N×z_dim`` of groups ``N`` → ``w`` ``N×w_dim`` (attributes in renderer units).

        ``truncation_psi`` < 1 pulls identities towards their group's mean, as StyleGAN's truncation does.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be N×{self.z_dim}, got {tuple(z.shape)}")
        group = torch.as_tensor(group, dtype=torch.long)
        if group.shape != (z.shape[0],):
            raise ValueError(f"group must have shape ({z.shape[0]},), got {tuple(group.shape)}")
        if len(group) and (group.min() < 0 or group.max() >= len(self.groups)):
            raise ValueError(f"group ids must be in [0, {len(self.groups)}), got {group.tolist()}")
        z = z.float()
        # Two products, not one with the within_identity row appended: a wider matmul may round the other
        # coordinates differently, and they must stay bit-identical to the worlds rendered before that row existed.
        unit = torch.cat([z @ self._projection.T, (z @ self._within_row).unsqueeze(1)], dim=1)
        return self._mean[group] + truncation_psi * self._std[group] * unit

    def w_spread(self, group: Tensor) -> Tensor:
        """Standard deviation of every ``w`` coordinate between identities of each group in ``group`` (``N×w_dim``).

        The scale of a move in ``w`` that keeps a face within its group: ``mapping`` is ``mean + spread · unit``.
        """
        return self._std[torch.as_tensor(group, dtype=torch.long)]

    def attributes(self, w: Tensor) -> dict[str, Tensor]:
        """Decode ``w`` into named attributes in natural units (pixels, 0..255 colours, multipliers), clamped."""
        n_feat = len(FEATURES)
        feats = (self._centre + self._unit * w[:, :n_feat]).clamp(self._lo, self._hi)
        out = {name: feats[:, i] for i, name in enumerate(FEATURES)}
        for colour in COLOURS:
            i = _W_INDEX[f"{colour}_{COLOUR_AXES[0]}"]
            rgb = (w[:, i : i + 3] * _COLOUR_UNIT) @ _COLOUR_BASIS
            out[colour] = rgb.clamp(0.0, 255.0)
        for name in NUISANCES:
            out[f"capture_{name}"] = (1.0 + _NUISANCE_UNIT * w[:, _W_INDEX[f"capture_{name}"]]).clamp(0.0, 4.0)
        out["within_identity"] = _within_identity(w)
        return out

    def synthesis(self, w: Tensor, generator: torch.Generator | None = None, nuisance: float = 1.0) -> Tensor:
        """Render identities ``w`` (``N×w_dim``) as uint8 RGB images ``N×3×112×112``.

        Args:
            w: identity codes from :meth:`mapping` (or perturbations of them).
            generator: source of the nuisances (pose, expression, lighting, ...); ``None`` uses torch's global RNG.
            nuisance: global strength of the capture conditions; 0 renders every identity frontal and clean, in
                its canonical form unless its group declares within-identity variability: that is the person
                changing between photos, not the camera, so it stays.
        """
        if w.ndim != 2 or w.shape[1] != self.w_dim:
            raise ValueError(f"w must be N×{self.w_dim}, got {tuple(w.shape)}")
        n = w.shape[0]
        if n == 0:
            return torch.zeros(0, 3, RESOLUTION, RESOLUTION, dtype=torch.uint8)
        w = w.float()
        normal = torch.randn(n, 16, generator=generator)
        uniform = torch.rand(n, 12, generator=generator)
        tile = torch.randint(0, self._noise_bank.shape[0], (n,), generator=generator)
        a = self.attributes(self._jittered(w, generator))
        s = {k: a[f"capture_{k}"] * nuisance for k in NUISANCES}
        sigma = (normal[:, 15].abs() * 3.0 * s["noise"]).view(n, 1, 1, 1) / 32.0
        out = torch.empty(n, 3, RESOLUTION, RESOLUTION, dtype=torch.uint8)
        # Chunks of a few dozen images keep temporaries small enough for the allocator to reuse them; fresh
        # multi-megabyte buffers cost more in page faults than the arithmetic. All draws were made above, so the
        # images do not depend on the chunk size.
        for i in range(0, n, _CHUNK):
            part = slice(i, i + _CHUNK)
            image = self._render(
                {k: v[part] for k, v in a.items()}, {k: v[part] for k, v in s.items()}, normal[part], uniform[part]
            )
            # +0.5 rounds on the truncating cast below.
            image.add_(self._noise_bank[tile[part]].unsqueeze(1).float().mul_(sigma[part]).add_(0.5))
            out[part] = image.clamp_(0.0, 255.0)
        return out

    def _jittered(self, w: Tensor, generator: torch.Generator | None) -> Tensor:
        """``w`` with each image's identity attributes jittered by its ``within_identity`` (``w`` itself if none).

        The jitter comes from a stream seeded by ``generator``'s state, not from ``generator`` itself: drawing from
        it would shift every later draw, so one group's jitter would change the nuisances of every image rendered
        after it (later chunks of a benchmark, other groups). This way a world where one group varies more renders
        the other groups' images bit-identically.
        """
        scale = _within_identity(w)
        if not bool((scale > 0).any()):
            return w
        if generator is None:
            noise = torch.randn(len(w), _IDENTITY_DIM)
        else:
            state = generator.get_state().numpy().tobytes()
            seed = int.from_bytes(hashlib.sha256(b"within-identity\x1f" + state).digest()[:8], "little") >> 1
            noise = torch.randn(len(w), _IDENTITY_DIM, generator=torch.Generator().manual_seed(seed))
        w = w.clone()
        w[:, :_IDENTITY_DIM] += scale.unsqueeze(1) * self._jitter_unit * noise
        return w

    # -- rendering -----------------------------------------------------------------------------------------------

    def _render(self, a: dict[str, Tensor], s: dict[str, Tensor], normal: Tensor, uniform: Tensor) -> Tensor:
        """The posed face (float 0..255, ``N×3×H×W``), before sensor noise and quantisation.

        Shapes are column-interval masks (:func:`_col_mask`), each one broadcast op over the batch, except the head
        and hair outline (:func:`_row_mask`). The pose is applied to coordinates, not pixels: translation and scale
        per image are free, and the small in-plane rotation is a shear to first order (horizontal for the outline,
        vertical for the column masks), so no resampling pass is needed. Colour layers are painted with in-place
        ``lerp``; shading (relief, nose, freckles, mole, hair streaks, light) is gathered in one grey map.
        """
        n, size = normal.shape[0], RESOLUTION
        px = self._xs.view(1, 1, size)  # image x along a row
        py = self._xs.view(1, size, 1)  # image y down a column

        def per(t: Tensor) -> Tensor:  # one value per image, broadcastable over (N, H, W)
            return t.view(n, 1, 1)

        # Nuisances (columns of `normal`/`uniform` have fixed roles).
        yaw = normal[:, 0] * 2.0 * s["pose"]
        smile = per(a["smile"] + normal[:, 1] * 0.8 * s["expression"])
        mouth_open = per((normal[:, 2] * 2.0 * s["expression"] - 1.0).clamp(min=0.0))
        blink = (uniform[:, 0] < 0.04 * s["expression"]).float()
        openness = per(((1.0 + normal[:, 3] * 0.12 * s["expression"]) * (1.0 - 0.85 * blink)).clamp(0.1, 1.4))
        brow_raise = normal[:, 4] * 0.9 * s["expression"]
        gaze = per(normal[:, 5] * 0.6 * s["expression"])
        light_angle = uniform[:, 1] * 2 * math.pi
        light_strength = per(normal[:, 6].abs() * 0.25 * s["lighting"])
        brightness = per(torch.exp(normal[:, 7] * 0.15 * s["lighting"]))
        cast = torch.exp(normal[:, 8:11] * 0.06 * s["colour_cast"].view(n, 1))  # (N, 3) channel gains
        inv_w = per(1.0 / (1.0 + uniform[:, 2] * 2.5 * s["blur"]))  # defocus = softer edges
        theta = per((normal[:, 9] * math.radians(3.5) * s["pose"]).clamp(-0.2, 0.2))
        scale = per(torch.exp((normal[:, 10] * 0.035 * s["pose"]).clamp(-0.15, 0.15)))
        shift_x = per((normal[:, 11] * 1.3 * s["pose"]).clamp(-5.0, 5.0))
        shift_y = per((normal[:, 13] * 1.3 * s["pose"]).clamp(-5.0, 5.0))
        # Background colours scale with the background nuisance too, so nuisance=0 renders a plain grey backdrop.
        bg_strength = s["background"].clamp(max=1.0).view(n, 1)
        bg_a = 130.0 + (210.0 * uniform[:, 3:6] - 105.0) * bg_strength
        bg_b = bg_a * (1.0 + (0.9 * uniform[:, 6:7] - 0.45) * bg_strength)
        bg_tex = per(uniform[:, 7] * 0.35 * s["background"])
        bg_grad = per(uniform[:, 8] * 1.2 * s["background"])

        # Canonical coordinates of every pixel: x' along rows, y' down columns (relative to the pose centre).
        xr = (px - _POSE_X - shift_x) / scale  # (N,1,W)
        yr = (py - _POSE_Y - shift_y) / scale  # (N,H,1)
        cy_ = _POSE_Y + yr  # canonical y of each row, before the rotation's vertical shear
        tilt = theta * xr  # a column mask's centre moves down by this (vertical shear)

        def across(height: Tensor | float, centre: Tensor) -> Tensor:
            """Canonical x (minus ``centre``) along rows of a feature at canonical ``height`` (horizontal shear)."""
            return xr + theta * (height - _POSE_Y) + (_POSE_X - centre)

        def paint(image: Tensor, rows: tuple[int, int] | None, alpha: Tensor, rgb: Tensor) -> None:
            target = image if rows is None else image[:, :, rows[0] : rows[1]]
            target.lerp_((rgb * cast).view(n, 3, 1, 1), alpha.unsqueeze(1))

        # Background (image coordinates): two colours blended along a gradient, with a soft pattern.
        t = (bg_tex * torch.sin(px * per(0.08 + 0.3 * uniform[:, 9]) + per(uniform[:, 10] * 6.3))) * torch.sin(
            py * per(0.08 + 0.3 * uniform[:, 11]) + per(normal[:, 12])
        )
        t.add_(bg_grad * torch.cos(per(light_angle + 1.0)) * (px - size / 2) / size + 0.5)
        t.add_(bg_grad * torch.sin(per(light_angle + 1.0)) * (py - size / 2) / size).clamp_(0.0, 1.0)
        ca = (bg_a * cast).view(n, 3, 1, 1)
        image = (((bg_b * cast).view(n, 3, 1, 1) - ca) * t.unsqueeze(1)).add_(ca)

        # Features follow the yaw a little, the outline moves the other way (alignment is on the features).
        cx_face = per(_CENTRE_X - 0.8 * yaw)
        cx_feat = per(_CENTRE_X + 0.5 * yaw)

        # Head: an ellipse narrowing towards the chin; ears and neck behind it.
        cy, fa, fb = per(a["face_centre_y"]), per(a["face_width"]), per(a["face_height"])
        t_face = (xr + (_POSE_X - cx_face)).add(theta * yr).abs_()  # (N,H,W): sheared distance from the face axis
        v = (cy_ - cy) / fb
        head = _row_mask(t_face, *_ellipse_rows(v, fa * (1.0 - per(a["jaw"]) * v.clamp(min=0.0).square()), fb), inv_w)
        ear_y, ear_w, ear_h = _EYE_Y + 12.0, per(a["ear_size"] * 0.6), per(a["ear_size"])
        ear_u = across(ear_y, cx_face).abs_().sub_(fa * 0.97)
        ears = _col_mask(cy_, ear_y + tilt, ear_h * _signed_sqrt(1.0 - (ear_u / ear_w).square()), inv_w)
        neck = ((fa * 0.62 - t_face) * inv_w + 0.5).clamp_(0.0, 1.0).mul_(((cy_ - cy - 0.3 * fb) * 0.3).clamp(0, 1))
        skin = torch.maximum(torch.maximum(head, ears, out=ears), neck, out=neck)

        # Hair: a cap around the head (straight sides below its centre) kept above the hairline or outside the
        # face, down to the hair length.
        ha, hb = fa + per(a["hair_volume"] * 0.6 + 1.5), fb + per(a["hair_volume"])
        hair = _row_mask(t_face, *_ellipse_rows(((cy_ - cy) / hb).clamp(max=0.0), ha, hb), inv_w)
        u = across(per(a["hairline"]), cx_face)
        hairline = (
            per(a["hairline"])
            + per(a["hair_droop"] * 2.0) * (u / fa).square()
            + per(a["parting"] * 0.12) * u
            + per(a["fringe"] * 1.5) * torch.sin(u * 0.55)
            + tilt
        )
        above = (cy_ * -inv_w).add(hairline * inv_w + 0.5).clamp_(0.0, 1.0)
        hair.mul_(((per(a["hair_length"]) - cy_) * 0.5 + 0.5).clamp(0.0, 1.0))
        hair.mul_(torch.maximum(above, 1.0 - head, out=above))

        # Grey shading: relief towards the face edge, ears and neck in shadow, hair streaks.
        edge = (t_face / fa).square_().square_().add_(v.square().square())
        shade = edge.mul_(-0.22).add_(0.18).mul_(head).add_(1.0).sub_(skin, alpha=0.18)
        streak = per(0.03 + 0.03 * uniform[:, 9]) * (1.0 + torch.sin(u * per(0.5 + 0.4 * uniform[:, 11])))
        shade.sub_(hair * streak)

        # Cheeks: blush and freckles; a mole anywhere on the lower face.
        r0, r1 = _CHEEK_ROWS
        u = across(_EYE_Y + 17.0, cx_feat)
        cheek_x = torch.exp(-((u.abs() - 17.0) / 6.5).square())
        cheek_y = torch.exp(-((cy_[:, r0:r1] - (_EYE_Y + 17.0)) / 6.0).square())
        blush = (cheek_x * per(a["blush"])) * cheek_y * head[:, r0:r1]
        freckles = (cheek_x * per(a["freckles"].clamp(min=0.0) * 0.45)) * cheek_y
        shade[:, r0:r1].sub_(freckles.mul_(self._freckles[r0:r1]))
        r0, r1 = _MOLE_ROWS
        mole_r = per(a["mole_size"].clamp(min=0.0) * 1.2)
        u = across(per(a["mole_y"]), cx_feat + per(a["mole_x"]))
        half = torch.where(mole_r > 0, mole_r * _signed_sqrt(1.0 - (u / mole_r.clamp(min=0.1)).square()), -5.0)
        mole = _col_mask(cy_[:, r0:r1], per(a["mole_y"]) + tilt, half, inv_w)
        shade[:, r0:r1].sub_(mole.mul_(head[:, r0:r1]), alpha=0.6)

        # Skin, blush, then hair (beard included) over it.
        paint(image, None, skin, a["skin"])
        paint(image, _CHEEK_ROWS, blush, torch.tensor([215.0, 95.0, 100.0]).expand(n, 3))
        r0 = _MOUTH_ROWS[0]
        beard_rows = ((cy_[:, r0:] - per(a["mouth_height"] + _MOUTH_Y - 11.0)) * 0.4).clamp(0.0, 1.0)
        beard = head[:, r0:] * (beard_rows * per(a["beard"].clamp(min=0.0) * 0.65))
        torch.maximum(hair[:, r0:], beard, out=hair[:, r0:])
        paint(image, None, hair, a["hair"])

        # Nose: shading only (nostrils, the sides of the bridge, the wings).
        r0, r1 = _NOSE_ROWS
        yb = cy_[:, r0:r1]
        tip = per(_NOSE_Y + a["nose_tip"])
        ns, nw = per(a["nostril_size"]), per(a["nose_width"])
        au = across(tip, cx_feat).abs_()
        nu = (au - nw * 0.6) / (1.8 * ns)
        nostrils = _col_mask(yb, tip + 2.0 + tilt, 1.1 * ns * _signed_sqrt(1.0 - nu.square()), inv_w)
        band = shade[:, r0:r1]
        band.sub_(nostrils, alpha=0.5)
        bridge = (1.0 - (au - nw * 0.4).abs() / 1.4).clamp(min=0.0)
        along = ((yb - (tip - per(a["nose_length"]))) / per(a["nose_length"])).clamp(0.0, 1.0).square()
        band.sub_(bridge * along, alpha=0.07)
        wing = (1.0 - (au - nw * 0.95).abs() / 1.3).clamp(min=0.0)
        band.sub_(wing * (1.0 - ((yb - tip) / 3.0).abs()).clamp(min=0.0), alpha=0.16)
        under = torch.exp(-(au / nw).square()) * torch.exp(-((yb - tip - 3.5) / 1.8).square())
        band.sub_(under, alpha=0.1)

        # Eyes and brows, mirrored about the face's vertical axis.
        r0, r1 = _EYE_ROWS
        yb = cy_[:, r0:r1]
        eye_y = per(_EYE_Y + a["eye_height"])
        er = per(a["eye_width"])
        u = across(eye_y, cx_feat)
        ex = u.abs() - per(_EYE_DX + a["eye_spacing"])  # outwards from the eye centre
        lx = ex * torch.sign(u) - gaze  # to the right in the image, from the iris centre
        prof = _signed_sqrt(1.0 - (ex / er).square())
        opening = per(a["eye_aspect"]) * openness * er
        upper, lower = opening * 1.1 * prof, opening * 0.8 * prof
        centre = eye_y + tilt - per(a["eye_tilt"]) * ex + (lower - upper) / 2
        aperture = _col_mask(yb, centre, (upper + lower) / 2, inv_w)
        wide = _signed_sqrt(1.0 - (ex / (er + 1.2)).square())
        lid = _col_mask(yb, centre - 0.6 * wide, (upper + lower) / 2 + 0.9 * wide, inv_w)
        ir = per(a["iris_size"]) * er
        iris = _col_mask(yb, eye_y + tilt, ir * _signed_sqrt(1.0 - (lx / ir).square()), inv_w).mul_(aperture)
        pr = ir * 0.45
        pupil = _col_mask(yb, eye_y + tilt, pr * _signed_sqrt(1.0 - (lx / pr).square()), inv_w).mul_(aperture)
        glint_half = 0.9 * _signed_sqrt(1.0 - ((lx + 0.3 * ir) / 0.9).square())
        glint = _col_mask(yb, eye_y + tilt - 0.35 * ir, glint_half, inv_w).mul_(aperture)
        brow_h = per(a["eye_height"] - a["brow_height"] - brow_raise)
        bx = across(_EYE_Y + brow_h, cx_feat).abs_() - per(_EYE_DX + a["eye_spacing"]) - 0.15 * er
        bq = 1.0 - (bx / (er * per(a["brow_length"]))).square()
        brow_y = _EYE_Y + brow_h + tilt - per(a["brow_arch"]) * bq.clamp(min=0.0) - per(a["brow_tilt"]) * bx
        brow = _col_mask(yb, brow_y, per(a["brow_thickness"] * 0.5) * _signed_sqrt(bq), inv_w)
        paint(image, _EYE_ROWS, brow.mul_(0.9), a["hair"] * 0.75)
        paint(image, _EYE_ROWS, lid, a["hair"] * 0.45)
        paint(image, _EYE_ROWS, aperture, torch.tensor([236.0, 234.0, 228.0]).expand(n, 3))
        paint(image, _EYE_ROWS, iris, a["iris"])
        paint(image, _EYE_ROWS, pupil, torch.full((n, 3), 18.0))
        paint(image, _EYE_ROWS, glint.mul_(0.85), torch.full((n, 3), 250.0))

        # Mouth: lips around a (smiling) mouth line, a dark gap when open, a thin line when closed.
        r0, r1 = _MOUTH_ROWS
        yb = cy_[:, r0:r1]
        mouth_y = per(_MOUTH_Y + a["mouth_height"])
        mu = across(mouth_y, cx_feat) / per(a["mouth_width"])
        mprof = _signed_sqrt(1.0 - mu.square())
        line = mouth_y + tilt - smile * (mu.square() * 2.5 - 0.8)
        gap = mouth_open * mprof.clamp(min=0.0)
        lip_up, lip_lo = per(a["lip_upper"]) * mprof, per(a["lip_lower"]) * mprof
        lips = _col_mask(yb, line + (lip_lo - lip_up) / 2, gap + (lip_up + lip_lo) / 2 + 0.3 * mprof, inv_w)
        inner = _col_mask(yb, line, gap * 0.9 + 0.3 * mprof - 0.05, inv_w)
        lips_rgb = a["skin"] * torch.tensor([0.82, 0.58, 0.6]) + a["lip_tint"].view(n, 1) * torch.tensor(
            [14.0, -6.0, -2.0]
        )
        paint(image, _MOUTH_ROWS, lips, lips_rgb.clamp(0.0, 255.0))
        paint(image, _MOUTH_ROWS, inner.mul_(0.9), torch.tensor([70.0, 28.0, 30.0]).expand(n, 3))

        # Directional light and exposure (image coordinates), folded into the grey map, applied once.
        cos, sin = torch.cos(per(light_angle)), torch.sin(per(light_angle))
        light = brightness * (1.0 + light_strength * cos * (px - size / 2) / (size / 2))
        light = (light + brightness * light_strength * sin * (py - size / 2) / (size / 2)).clamp_(min=0.3)
        return image.mul_(shade.mul_(light).unsqueeze(1))


def make_world(cfg: WorldConfig) -> ProceduralFaceWorld:
    """The procedural world a recipe describes.

    Args:
        cfg: the recipe's ``data.world`` section (taxonomy file or ``None`` for the built-in one, world seed, and
            per-group difficulty changes on top of the taxonomy).

    Returns:
        The world with that taxonomy, its fixed random parameters drawn from ``cfg.seed``.
    """
    return ProceduralFaceWorld(apply_difficulty(load_taxonomy(cfg.taxonomy), cfg.difficulty), seed=cfg.seed)
