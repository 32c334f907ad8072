"""compress stage of the factory pipeline.

Every compressor module is imported here, so :data:`COMPRESSORS` holds every kind a recipe may name: NNCF PTQ of the
exported files (:mod:`factory.compress.compressors`) and QuantFace-style QAT of the torch student
(:mod:`factory.compress.qat`).
"""

from factory.compress import compressors, qat
from factory.compress.compressors import COMPRESSORS

__all__ = ["COMPRESSORS", "compressors", "qat"]
