"""Pareto set over a study's feasible completed trials, and the policies that pick one model.

Everything here reads the study storage alone (through :mod:`autotune.records`), so ``autotune
report`` and ``autotune select`` work without rerunning anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autotune.errors import ConfigError
from autotune.records import StudyView, TrialRecord
from autotune.selection.pareto import dominates, pareto_indices, pareto_set
from autotune.selection.policies import POLICIES, Policy, PolicyOptions, policy_names, policy_options, register_policy
from autotune.selection.uncertainty import PairedDifference, paired_difference

__all__ = [
    "POLICIES", "PairedDifference", "Policy", "PolicyOptions", "Selection", "StudyView", "dominates", "least_infeasible",
    "paired_difference", "pareto_indices", "pareto_set", "policy_names", "policy_options", "register_policy", "select",
    "with_remeasured",
]


@dataclass
class Selection:
    record: TrialRecord | None
    policy: str
    rule: str
    feasible: bool = True
    missed_by: dict[str, float] = field(default_factory=dict)
    # Candidates whose accuracy a paired bootstrap cannot tell from the selected one's (validation rows).
    indistinguishable: list[int] = field(default_factory=list)
    # The selected trial's accuracy minus the baseline's, paired on the same validation rows.
    vs_baseline: PairedDifference | None = None


def with_remeasured(record: TrialRecord) -> TrialRecord:
    """The record with objectives re-measured after the study (interleaved latency) in place of the first ones."""
    if not record.remeasured:
        return record
    objectives = {k: (record.remeasured[k].value if k in record.remeasured else v) for k, v in record.objectives.items()}
    return record.model_copy(update={"objectives": objectives})


def _indistinguishable(chosen: TrialRecord, candidates: list[TrialRecord], metric: str) -> list[TrialRecord]:
    """Candidates (the chosen one included) whose ``metric`` a paired bootstrap cannot tell from the chosen's."""
    out = []
    for r in candidates:
        if r.number == chosen.number:
            out.append(r)
            continue
        diff = paired_difference(r.metrics.get(metric), chosen.metrics.get(metric))
        if diff is not None and not diff.distinguishable:
            out.append(r)
    return out


def select(view: StudyView, *, policy: str = "max-accuracy", min_accuracy: float | None = None,
           latency_budget_ms: float | None = None, options: dict[str, Any] | None = None,
           weights: dict[str, float] | None = None, prefer_cheaper: bool = True) -> Selection:
    """Pick one trial from the feasible Pareto set by ``policy``; deterministic, with its rule in words.

    ``min_accuracy`` applies to the accuracy objective and ``latency_budget_ms`` to the latency
    objective; a study without that objective refuses the filter rather than apply it elsewhere.
    Latency re-measured after the study (interleaved) replaces the first measurement. With
    ``prefer_cheaper``, among the candidates whose accuracy a paired bootstrap on the validation rows
    cannot tell from the chosen one's, the cheapest (the other objectives in priority order) is taken.
    ``options`` are the policy's own settings (its ``Options``; ``weights`` is short for ``options["weights"]``).
    """
    policy_cls = POLICIES.get(policy)
    if policy_cls is None:
        raise ConfigError("selection.policy", f"expected one of {', '.join(policy_names())}, got \"{policy}\"")
    chooser = policy_cls(policy_options(policy, {**(options or {}), **({"weights": weights} if weights else {})}))
    accuracy, latency = view.meta.objective("accuracy"), view.meta.objective("latency")
    if min_accuracy is not None and accuracy is None:
        raise ConfigError("selection.min_accuracy", "the study has no accuracy objective to apply it to")
    if latency_budget_ms is not None and latency is None:
        raise ConfigError("selection.latency_budget_ms", "the study has no latency objective to apply it to "
                          f"(objectives: {', '.join(o.metric for o in view.objectives) or 'none'})")
    candidates = [with_remeasured(r) for r in pareto_set(view)]
    notes = []
    if min_accuracy is not None and accuracy is not None:
        candidates = [r for r in candidates if r.objectives[accuracy.metric] >= min_accuracy]
        notes.append(f"{accuracy.title} >= {min_accuracy}")
    if latency_budget_ms is not None and latency is not None:
        candidates = [r for r in candidates if r.objectives[latency.metric] <= latency_budget_ms]
        notes.append(f"{latency.title} <= {latency_budget_ms} ms")
    if not candidates:
        filters = {}
        if min_accuracy is not None and accuracy is not None:
            filters[accuracy.metric] = (min_accuracy, True)
        if latency_budget_ms is not None and latency is not None:
            filters[latency.metric] = (latency_budget_ms, False)
        nearest = _nearest_to_filters([with_remeasured(r) for r in pareto_set(view)], filters, notes, policy, title=view.title)
        return nearest or least_infeasible(view, policy, extra=notes)
    where = f"among {len(candidates)} feasible Pareto trial(s)" + (f" with {' and '.join(notes)}" if notes else "")
    best, rule = chooser.choose(candidates, view.objectives)
    rule = f"{rule}, {where}"
    same: list[TrialRecord] = [best]
    if accuracy is not None:
        same = _indistinguishable(best, candidates, accuracy.metric)
        if prefer_cheaper and len(same) > 1:
            costs = [o for o in view.objectives if o is not accuracy]
            cheapest = min(same, key=lambda r: (*[r.objectives[o.metric] if not o.higher_is_better else -r.objectives[o.metric]
                                                  for o in costs],
                                                -r.objectives[accuracy.metric] if accuracy.higher_is_better
                                                else r.objectives[accuracy.metric], r.number))
            if cheapest.number != best.number:
                rule += (f"; then trial {cheapest.number}, whose {accuracy.title} a paired bootstrap on the same rows cannot "
                         f"tell from trial {best.number}'s, because it is cheaper (prefer_cheaper)")
                best = cheapest
                same = _indistinguishable(best, candidates, accuracy.metric)
    # Against its own base model's baseline (like for like, when the study searches the base model).
    baseline = view.baseline_for(best)
    vs_baseline = paired_difference(best.metrics.get(accuracy.metric), baseline.get(accuracy.metric)) if accuracy else None
    return Selection(record=best, policy=policy, rule=rule, indistinguishable=sorted(r.number for r in same if r is not best),
                     vs_baseline=vs_baseline)


def _nearest_to_filters(candidates: list[TrialRecord], filters: dict[str, tuple[float, bool]], notes: list[str],
                        policy: str, *, title: Callable[[str], str]) -> Selection | None:
    """No feasible Pareto trial passes the selection filters: the one that misses them by the least
    (the sum of each filter's miss relative to its bound), with by how much."""
    if not candidates or not filters:
        return None

    def misses(r: TrialRecord) -> dict[str, float]:
        out = {}
        for metric, (bound, at_least) in filters.items():
            miss = (bound - r.objectives[metric]) if at_least else (r.objectives[metric] - bound)
            if miss > 0:
                out[metric] = miss
        return out

    def score(r: TrialRecord) -> tuple[float, int]:
        return sum(m / (abs(filters[k][0]) or 1.0) for k, m in misses(r).items()), r.number

    best = min(candidates, key=score)
    missed = misses(best)
    text = ", ".join(f"{title(m)} by {v:.4g}" for m, v in missed.items())
    rule = f"no feasible Pareto trial met {' and '.join(notes)}; exported trial {best.number}, which missed by the least ({text})"
    return Selection(record=best, policy=policy, rule=rule, feasible=False, missed_by=missed)


def least_infeasible(view: StudyView, policy: str, extra: list[str] | None = None) -> Selection:
    """No trial met the constraints: the one that missed by the least (relative to each bound)."""
    completed = view.completed()
    if not completed:
        return Selection(record=None, policy=policy, rule="no trial completed", feasible=False)

    def miss(r: TrialRecord) -> tuple[float, int]:
        total = sum(max(0.0, r.constraints.get(b.metric, 0.0)) / (abs(b.value) or 1.0) for b in view.bounds)
        return total, r.number

    best = min(completed, key=miss)
    missed = {b.metric: best.constraints.get(b.metric, 0.0) for b in view.bounds if best.constraints.get(b.metric, 0.0) > 0}
    if extra and not missed:
        rule = f"no trial met {' and '.join(extra)}; exported trial {best.number}, the nearest"
    else:
        text = ", ".join(f"{view.title(m)} by {v:.4g}" for m, v in missed.items())
        rule = f"no trial met the constraints; exported trial {best.number}, which missed by the least ({text})"
    return Selection(record=best, policy=policy, rule=rule, feasible=False, missed_by=missed)
