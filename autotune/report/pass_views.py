"""What the trials table and the plots show of each pass of a trial: each pass's own ``view`` hook
(:meth:`autotune.passes.base.Pass.view`), over the trial's resolved parameters and the pass's stored summary. A
pass type this process does not know (a plugin not imported here) shows nothing."""

from __future__ import annotations

from autotune.passes.base import PassView
from autotune.records import TrialRecord

__all__ = ["pass_views"]


def pass_views(record: TrialRecord) -> list[PassView]:
    """One view per pass the trial ran, in pipeline order."""
    from autotune.passes import PASS_REGISTRY

    views = []
    for step in record.passes:
        cls = PASS_REGISTRY.get(step.type)
        if cls is not None:
            views.append(cls.view(record.params.get(step.name) or {}, record.summaries.get(step.name)))
    return views
