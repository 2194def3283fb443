"""A warning category ignored for one call, scoped: only the filter entry added is removed afterwards.

A leaf module (no autotune import), so that the leaves (``autotune.device``) can use it too;
:mod:`autotune.library_noise` has the other scoped helpers."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["ignored_warning"]


@contextlib.contextmanager
def ignored_warning(category: type[Warning]) -> Iterator[None]:
    """For the duration, warnings of ``category`` are ignored; afterwards that one filter entry is removed
    again (unlike ``warnings.catch_warnings``, which puts back a copy of the whole list and so drops any
    filter another thread, or an import, added meanwhile). Nested uses each add and remove their own entry."""
    entry = ("ignore", None, category, None, 0)  # what warnings.filterwarnings would add, but this very object
    warnings.filters.insert(0, entry)
    _filters_changed()
    try:
        yield
    finally:
        for index, item in enumerate(warnings.filters):
            if item is entry:
                del warnings.filters[index]
                break
        _filters_changed()


def _filters_changed() -> None:
    """Tell the warnings module its filter list changed, as its own functions do (the per-module "already
    warned" caches are keyed on the list's version)."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:
        mutated()
