"""Errors that users of the library and the CLI see."""

from __future__ import annotations


class CaapError(ValueError):
    """A bad input or option. The message names the bad value and what was expected.

    The CLI prints it as one line and exits with status 2; library users can catch it as ``ValueError``.
    """


class UnsupportedModelError(CaapError, TypeError):
    """The model's architecture is not understood by any adapter; the message says what is missing."""
