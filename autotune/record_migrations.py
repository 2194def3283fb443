"""The stored schema's migration steps, one per version, as Optuna keeps its storages' (alembic revisions): a study's
meta and its trials' records written by an older autotune are brought to today's shape step by step before they are
typed (:mod:`autotune.record_schema`), so the types carry no "absent in older records" defaults for a shape that
changed. A step takes the raw stored dict of version ``v`` and returns that of ``v + 1``; it never writes to the
storage (a study is rewritten in today's shape only when this autotune next writes it).

Versions:

1. autotune 0.1: the study's facts as separate user attributes (``objectives``, ``bounds``, ``provider``, ``config``,
   ``autotune_baseline``); no meta attribute.
2. one typed meta attribute (``autotune_meta``) with ``schema_version``; each objective has a ``kind``.
3. the meta has a ``fingerprint`` of what the trials' scores depend on (a study of 2 has none, and adopts one from its
   stored config on its next run).
4. a trial record holds each pass's own summary (``summaries``, by pass name: ``Pass.summary``) in place of the
   DropLayers-only ``dropped_layers`` field.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from autotune.record_schema import SCHEMA_VERSION, metric_kind

__all__ = ["META_STEPS", "RECORD_STEPS", "meta_from_attributes", "migrate_meta", "migrate_record"]

Raw = dict[str, Any]


def meta_from_attributes(attrs: dict[str, Any]) -> Raw:
    """Version 1 (no meta attribute): the study's separate attributes gathered into one version-1 meta dict."""
    return {
        "schema_version": 1,
        "objectives": [dict(o) for o in attrs.get("objectives", [])],
        "bounds": [dict(b) for b in attrs.get("bounds", [])],
        "baseline": dict(attrs.get("autotune_baseline") or {}),
        "config": attrs.get("config", {}),
        "provider": attrs.get("provider", ""),
        "grid_enqueued": bool(attrs.get("grid_enqueued", False)),
    }


def _meta_1_to_2(raw: Raw) -> Raw:
    """Each objective gets the kind its metric id names (``accuracy-*``, ``latency-*``, ``footprint-size*``...)."""
    raw["objectives"] = [{**o, "kind": o.get("kind") or metric_kind(o["metric"])} for o in raw.get("objectives", [])]
    return raw


def _meta_2_to_3(raw: Raw) -> Raw:
    """No fingerprint was kept: an explicit None (the study adopts one from its stored config on its next run)."""
    raw.setdefault("fingerprint", None)
    return raw


def _meta_3_to_4(raw: Raw) -> Raw:
    """The meta's shape is unchanged (4 changed the trial records)."""
    return raw


def _record_3_to_4(raw: Raw) -> Raw:
    """``dropped_layers`` (the DropLayers pass's summary) moves under ``summaries``, by the name of the pass that wrote it."""
    dropped = raw.pop("dropped_layers", None)
    summaries = dict(raw.get("summaries") or {})
    if dropped is not None:
        name = next((p.get("name") for p in raw.get("passes") or [] if p.get("type") == "DropLayers"), None) or "drop_layers"
        summaries.setdefault(name, dropped)
    raw["summaries"] = summaries
    return raw


# Version v -> the step to v + 1. A trial record kept no version of its own before 4: it reads as 3 (records of 1 to 3
# differ only in fields added with a default).
META_STEPS: dict[int, Callable[[Raw], Raw]] = {1: _meta_1_to_2, 2: _meta_2_to_3, 3: _meta_3_to_4}
RECORD_STEPS: dict[int, Callable[[Raw], Raw]] = {3: _record_3_to_4}
FIRST_RECORD_VERSION = 3


def _migrate(raw: Raw, version: int, steps: dict[int, Callable[[Raw], Raw]], what: str) -> Raw:
    out = copy.deepcopy(raw)  # the stored dict (a trial's user attributes) is never changed
    if version > SCHEMA_VERSION:
        # Written by a newer autotune: read as it is (unknown fields are kept, never refused), no step backwards.
        return out
    for v in range(version, SCHEMA_VERSION):
        if v not in steps:
            raise ValueError(f"no migration step for a {what} of schema {v}")
        out = steps[v](out)
    return out


def migrate_meta(raw: Raw) -> Raw:
    """A stored meta dict of any version, in today's shape; ``schema_version`` stays the one it was written with."""
    version = int(raw.get("schema_version") or 1)
    out = _migrate(raw, version, META_STEPS, "study meta")
    out["schema_version"] = version
    return out


def migrate_record(raw: Raw) -> Raw:
    """A stored trial record dict of any version, in today's shape."""
    version = int(raw.get("schema_version") or FIRST_RECORD_VERSION)
    out = _migrate(raw, version, RECORD_STEPS, "trial record")
    out["schema_version"] = max(version, SCHEMA_VERSION)
    return out
