"""Studies: plug-ins that run over finished runs (:class:`Study`, :data:`STUDIES`).

Each registered study adds a verb to the ``lth`` command (its settings' fields are the
flags), a table to ``lth.load(...).studies``, and its table and figures to ``lth report``;
it stores its files through :class:`lth.store.Analysis`. Built in: ``instability``.

>>> from lth.studies import STUDIES
>>> STUDIES["instability"].settings()
InstabilitySettings(rewind_steps=(0,), levels=(0,), points=11)
"""

from .base import STUDIES, FigureItem, NoSettings, Study, flag, register_study
from .instability import Instability, InstabilitySettings

STUDIES.mark_builtin()

__all__ = ["STUDIES", "FigureItem", "Instability", "InstabilitySettings", "NoSettings",
           "Study", "flag", "register_study"]
