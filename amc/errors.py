"""The one exception type the CLI turns into a one-line message (exit status 2)."""

from __future__ import annotations


class AmcError(ValueError):
    """Bad input from the user: a wrong path, an unknown name, an unreachable budget.

    The message must say what was wrong and what to do instead. Subclasses ``ValueError`` so that
    library users can catch it the usual way.
    """
