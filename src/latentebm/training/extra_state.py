"""Plain training attributes (step counters, histories) carried in ``state_dict()``."""

from __future__ import annotations

import copy
from typing import Any, ClassVar


class TrainingAttributes:
    """Mixin for an ``nn.Module``: the attributes named in ``TRAINING_STATE`` are its extra
    state, so ``state_dict()`` holds them and ``load_state_dict()`` restores them."""

    TRAINING_STATE: ClassVar[tuple[str, ...]] = ()

    def get_extra_state(self) -> dict[str, Any]:
        return {name: copy.deepcopy(getattr(self, name)) for name in self.TRAINING_STATE}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the ``TRAINING_STATE`` attributes found in ``state`` (deep copies).

        Parameters
        ----------
        state : dict
            The extra state from :meth:`get_extra_state`; names it lacks are left unchanged.
        """
        if not isinstance(state, dict):
            raise ValueError(f"the extra state of {type(self).__name__} must be a dict")
        for name in self.TRAINING_STATE:
            if name in state:
                setattr(self, name, copy.deepcopy(state[name]))


__all__ = ["TrainingAttributes"]
