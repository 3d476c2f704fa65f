"""What may be decided per layer, and the mapping from a normalised action in [0, 1] to a choice.

The RL agent emits one value ``a`` in [0, 1] per decision; Optuna samplers suggest the same ``a``
through :meth:`Space.suggest`, so every agent searches the very same space and the environment does
the same budget enforcement for all of them.
"""

from __future__ import annotations

from search_spaces.spaces import BitSpace, KeepRatioSpace, Space, UnitSpace, space_for

__all__ = ["Space", "UnitSpace", "KeepRatioSpace", "BitSpace", "space_for"]
