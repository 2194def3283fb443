"""One error family for user mistakes.

Anything raised as a :class:`UserError` is the user's to fix (a config key, a file, a flag): the CLI
prints it as one line and exits with code 2. Every other exception is a bug in autotune.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


class UserError(Exception):
    """A mistake in what the user gave autotune; ``where`` names the config key path or file."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(UserError):
    """A config value is missing, misspelt, of the wrong type or out of range."""


class DataError(UserError):
    """A data file is unreadable, empty, or does not fit its template."""


class ModelError(UserError):
    """A model file or folder is missing, truncated, or of a kind autotune cannot load."""


class DiskFullError(UserError):
    """No space left where autotune writes; the study stays resumable once space is freed."""


class TrialTimeout(Exception):
    """The trial ran past ``engine.trial_timeout`` (not the user's mistake: the trial fails, the study goes on)."""


def did_you_mean(word: str, candidates: Iterable[str], *, shown: Callable[[str], str] | None = None) -> str:
    """Return ``"; did you mean 'x'?"`` for the nearest candidate, or ``""`` if none is close (the one "did you mean"
    of autotune: config keys, registries, metric sub-types, lm-eval tasks). ``shown``: how a matched candidate is
    spelled in the message (a registry matches lower-case names and shows the registered spelling)."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{shown(match[0]) if shown else match[0]}'?" if match else ""
