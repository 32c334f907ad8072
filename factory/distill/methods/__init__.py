"""Distillation methods, registered by ``kind`` (``distill.method`` in a recipe): see :mod:`.base`."""

from factory.distill.methods import feature_kd, margin, mst_kd, qud
from factory.distill.methods.base import DISTILL_METHODS, MethodContext

__all__ = ["DISTILL_METHODS", "MethodContext", "feature_kd", "margin", "mst_kd", "qud"]
