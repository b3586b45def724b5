"""Quantitative descriptions of learned atoms and filters (see :mod:`.atoms`)."""

from . import atoms
from .atoms import *  # noqa: F403 (re-export: the public names are listed once, in atoms)

__all__ = list(atoms.__all__)
