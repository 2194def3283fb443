"""One registry type for passes, evaluators and selection policies: names are case-insensitive and a
name registered twice is an error (a plugin can never silently replace a built-in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autotune.errors import ConfigError, did_you_mean

T = TypeVar("T")

__all__ = ["DuplicateNameError", "Registry"]


class DuplicateNameError(ValueError):
    """A second registration under a name that is already taken."""


class Registry(Generic[T]):
    """Names -> entries. ``kind`` is what an entry is, for messages ("pass type", "policy")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._canonical: dict[str, str] = {}  # lower-case name -> the spelling it was registered with

    def add(self, name: str, entry: T) -> T:
        key = name.lower()
        if key in self._entries and self._entries[key] is not entry:
            raise DuplicateNameError(f"{self.kind} '{name}' is already registered (to {self._entries[key]!r})")
        self._entries[key] = entry
        self._canonical.setdefault(key, name)
        return entry

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under each of ``names``."""

        def wrap(entry: T) -> T:
            for name in names:
                self.add(name, entry)
            return entry

        return wrap

    def get(self, name: str) -> T | None:
        return self._entries.get(name.lower())

    def names(self) -> list[str]:
        """The registered spellings, sorted."""
        return sorted(self._canonical.values())

    def suggestion(self, name: str) -> str:
        """``"; did you mean 'x'?"`` for the nearest registered name, or ``""``."""
        return did_you_mean(name.lower(), self._entries, shown=self._canonical.__getitem__)

    def lookup(self, name: str, *, where: str, what: str, label: Callable[[T], str]) -> T:
        """The entry under ``name`` (any case), or the one-line ``ConfigError`` at ``where``: the nearest
        registered name (aliases too, any case) suggested by its entry's ``label``, every label known."""
        entry = self.get(name)
        if entry is None:
            known = sorted({label(e) for e in self._entries.values()})
            hint = did_you_mean(name.lower(), self._entries, shown=lambda key: label(self._entries[key]))
            raise ConfigError(where, f"unknown {what} \"{name}\"{hint} (known: {', '.join(known)})")
        return entry

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(self._canonical[k], v) for k, v in self._entries.items()]
