"""Errors that users of the library and the CLI see."""

from __future__ import annotations


class CaapError(ValueError):
    """A bad input or option. The message names the bad value and what was expected.

    The CLI prints it as one line and exits with status 2; library users can catch it as ``ValueError``.
    """


class UnsupportedModelError(CaapError, TypeError):
    """The model's architecture is not understood by any adapter; the message says what is missing."""


class OptionError(CaapError):
    """A bad value of one named option. The library names the option as its API does (``top_k 0: expected a
    positive number of classes``); the CLI names it by its flag (:meth:`as_flag`: ``--top-k 0: …``)."""

    def __init__(self, option: str, detail: str) -> None:
        self.option, self.detail = option, detail
        super().__init__(f"{option} {detail}")

    def as_flag(self) -> str:
        """The message with the option written as a command-line flag."""
        return f"--{self.option.replace('_', '-')} {self.detail}"
