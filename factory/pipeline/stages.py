"""The pipeline's stages, in the order data flows. Adding a stage means adding it here, explicitly.

Each stage is declared next to its code (``factory/<stage package>/stage.py``: the settings it reads, the stages it
needs, how it reports itself). Importing this module imports every stage's dependencies (torch, NNCF, OpenVINO):
only a build does.
"""

from __future__ import annotations

from factory.compress.stage import STAGE as COMPRESS
from factory.data.stage import STAGE as DATA
from factory.deploy.stage import STAGE as DEPLOY
from factory.distill.stage import STAGE as DISTILL
from factory.evaluate.stage import STAGE as VALIDATE
from factory.export.stage import STAGE as EXPORT
from factory.pipeline.stage import Stage
from factory.release.stage import STAGE as RELEASE
from factory.train.stage import STAGE as TEACHER

STAGES: tuple[Stage, ...] = (DATA, TEACHER, DISTILL, EXPORT, COMPRESS, VALIDATE, DEPLOY, RELEASE)
