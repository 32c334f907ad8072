"""Multi-teacher space adaptors (MST-KD's EAF-Fusion backbones), registered by name: ``distill.method.adaptor``.

An adaptor maps the concatenation of several teachers' normalised embeddings (``in_dim``: 2,048 for four 512-d
teachers) to one embedding of the student's size (``out_dim``), the space the student is distilled from:

- ``sl``: one linear layer, ``in_dim → out_dim``.
- ``dul``: ``Linear(in_dim → out_dim)``, LeakyReLU (slope 0.01), ``Linear(out_dim → out_dim)``.
- ``dldp``: ``dul`` with Dropout(0.2) before the activation.

The paper's hidden width is its output width (512); here both are the student's embedding size, so the adaptor
fits any student by construction.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from factory.registry import Registry

ADAPTORS: Registry[Callable[[int, int], nn.Module]] = Registry("adaptor")

LEAKY_SLOPE = 0.01  # the paper's LeakyReLU
DROPOUT = 0.2  # DLDP's


@ADAPTORS.register("sl")
def single_layer(in_dim: int, out_dim: int) -> nn.Module:
    """SL: a single fully connected layer (the paper's best adaptor with both a-KD and EAF-KD, Tables 2 and 3)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim))


@ADAPTORS.register("dul")
def dual_layer(in_dim: int, out_dim: int) -> nn.Module:
    """DuL: two fully connected layers with a LeakyReLU between them."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(out_dim, out_dim))


@ADAPTORS.register("dldp")
def dual_layer_dropout(in_dim: int, out_dim: int) -> nn.Module:
    """DLDP: DuL with dropout applied before the activation."""
    return nn.Sequential(
        nn.Linear(in_dim, out_dim), nn.Dropout(DROPOUT), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(out_dim, out_dim)
    )


def create_adaptor(name: str, in_dim: int, out_dim: int) -> nn.Module:
    """A registered adaptor; unknown names raise :class:`~factory.registry.UnknownNameError` with close matches."""
    return ADAPTORS.get(name)(in_dim, out_dim)
