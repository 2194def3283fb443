"""report.html: one self-contained page (inline CSS, images as data URIs, no script, no external URL)."""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import Any

from autotune.fileio import write_text
from autotune.records import StudyView
from autotune.report.plots import write_plots
from autotune.report.values import shown_metric, shown_value
from autotune.selection import Selection

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .3rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.rule { font-size: 1.05rem; background: #f3f6fa; border-left: 4px solid #1f77b4; padding: .6rem .9rem; }
.warning { background: #fff4e5; border: 2px solid #d9822b; color: #6b3a00; padding: .8rem 1rem; margin: 1rem 0; font-weight: 500; }
.warning strong { color: #a0290b; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; } td.text, th.text { text-align: left; }
tr.selected td { background: #fdecea; font-weight: 600; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
figcaption { font-size: .85rem; color: #555; } .muted { color: #666; } ul.reasons { font-size: .9rem; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()  # numpy scalar
        except (ValueError, AttributeError):
            return value
    return value


def fmt(value: Any) -> str:
    """A cell's text: numbers to 4 significant digits, blanks for missing values."""
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(value: Any, tag: str = "td") -> str:
    value = _plain(value)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    cls = "" if numeric else ' class="text"'
    return f"<{tag}{cls}>{escape(fmt(value))}</{tag}>"


def rows_table(header: list[str], rows: list[list[Any]], *, table_id: str | None = None) -> str:
    head = "".join(f'<th class="text">{escape(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def frame_table(frame: Any, *, table_id: str, selected: int | None = None, empty: str = "none") -> str:
    """A DataFrame as an escaped HTML table; each row carries ``data-trial`` and the selected trial is highlighted."""
    if frame is None or len(frame) == 0:
        return f'<p class="muted" id="{escape(table_id)}">{escape(empty)}</p>'
    columns = [str(c) for c in frame.columns]
    head = "".join(f'<th class="text">{escape(c)}</th>' for c in columns)
    body = []
    for record in frame.to_dict(orient="records"):
        number = record.get("number")
        trial = fmt(number)
        cls = ' class="selected"' if selected is not None and number == selected else ""
        cells = "".join(_cell(record[c]) for c in frame.columns)
        body.append(f'<tr data-trial="{escape(trial)}"{cls}>{cells}</tr>')
    return (f'<div class="scroll"><table id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _metrics_section(view: StudyView, selection: Selection) -> str:
    record = selection.record
    if record is None or not record.metrics:
        return '<p class="muted">No trial was selected, so there are no metrics to show.</p>'
    rows = []
    baseline = view.baseline_for(record)  # its own base model's, when the study searched the base
    for key in record.metrics:
        m = shown_metric(record, key)  # re-measured where it was, with that value's own interval
        assert m is not None
        base = baseline.get(key)
        ci = f"[{m.ci_low:.4g}, {m.ci_high:.4g}]" if m.ci_low is not None and m.ci_high is not None else ""
        change = ""
        if base is not None:
            delta = m.value - base.value
            change = f"{delta:+.4g}" + (f" ({100 * delta / abs(base.value):+.1f}%)" if base.value else "")
        better = "higher" if m.higher_is_better else "lower"
        test = record.test_metrics.get(key)
        rows.append([m.title, key, m.value, ci, test.value if test else None, (test.value - m.value) if test else None,
                     m.unit, better, base.value if base else None, change, m.flag or ""])
    note = ""
    if selection.indistinguishable:
        quality = view.meta.objective("accuracy")
        compared = quality.label or quality.metric if quality else "accuracy"
        note = (f'<p id="indistinguishable">Statistically indistinguishable in {escape(compared)} from the selected trial '
                f'(paired bootstrap on the validation rows): trial(s) {escape(", ".join(map(str, selection.indistinguishable)))}.</p>')
    if record.base is not None:
        note += f'<p id="selected-base">Base model: {escape(_base_words(view, record.base))}; compared with its own baseline.</p>'
    return note + rows_table(["metric", "id", f"trial {record.number} (validation)", "95% CI", "test", "gap", "unit", "better",
                              f"baseline ({view.meta.baseline_kind})", "change", "flag"], rows, table_id="selected-metrics")


def _base_words(view: StudyView, name: str) -> str:
    info = view.meta.base_info(name)
    if info is None:
        return name
    return f"{name} ({info.model_id or info.model_path}{', ' + info.gguf_file if info.gguf_file else ''})"


def _bases_section(view: StudyView) -> str:
    """A study that searched the base model: each candidate, its baseline and its trials."""
    if not view.meta.bases:
        return ""
    metrics = [o.metric for o in view.objectives]
    rows = []
    for info in view.meta.bases:
        baseline = view.meta.base_baselines.get(info.name, {})
        trials = [r for r in view.records if r.base == info.name]
        rows.append([_base_words(view, info.name), len(trials), sum(r.state == "COMPLETE" for r in trials),
                     *[baseline[m].value if m in baseline else None for m in metrics]])
    header = ["base model", "trials", "completed", *[f"baseline {view.title(m)}" for m in metrics]]
    return "<h2>Base models</h2>" + rows_table(header, rows, table_id="base-models")


def _constraints_section(view: StudyView, selection: Selection) -> str:
    if not view.bounds:
        return '<p class="muted">No constraints: every completed trial counts as feasible.</p>'
    rows = []
    record = selection.record
    bounds = view.meta.base_bounds.get(record.base, view.bounds) if record is not None and record.base else view.bounds
    for b in bounds:
        value = shown_value(record, b.metric) if record else None
        # Judged on the value shown (the re-measured one where there is one), so status and value agree.
        if value is not None:
            miss = (b.value - value) if b.higher_is_better else (value - b.value)
        else:
            miss = record.constraints.get(b.metric) if record else None
        met = "" if miss is None else ("met" if miss <= 0 else f"missed by {miss:.4g}")
        rows.append([b.metric, f"{'≥' if b.higher_is_better else '≤'} {b.value:.4g}", b.goal, value, met])
    return rows_table(["metric", "bound", "goal", "selected trial", "status"], rows, table_id="constraints")


def _warning(view: StudyView, selection: Selection) -> str:
    if selection.feasible:
        return ""
    if selection.record is None:
        return ('<div class="warning" id="infeasible-warning"><strong>No trial met the constraints.</strong> '
                f"No trial completed, so nothing was selected ({escape(selection.rule)}).</div>")
    bounds = {b.metric: f" (bound {'≥' if b.higher_is_better else '≤'} {b.value:.4g})" for b in view.bounds}
    missed = (", ".join(f"{escape(view.title(m))} by {v:.4g}{bounds.get(m, '')}" for m, v in selection.missed_by.items())
              or "no bound (see the rule)")
    return ('<div class="warning" id="infeasible-warning"><strong>No trial met the constraints.</strong> '
            f"The nearest one, trial {selection.record.number}, was exported anyway; it missed {missed}.</div>")


def _predictions_section(view: StudyView, selection: Selection) -> str:
    """The selected model's best and worst validation rows by its first objective scored per row."""
    from autotune.report.predictions import shown_predictions

    record = selection.record
    shown = shown_predictions(record.metrics, [o.metric for o in view.objectives]) if record is not None else None
    if shown is None:
        return ""
    key = shown["metric"]
    table = rows_table(["", "input", "reference", "prediction", view.title(key)],
                       [[tag, " / ".join(str(v) for v in row["input"].values()), row["reference"], row["prediction"],
                         row["scores"][key]] for tag in ("best", "worst") for row in shown[tag]],
                       table_id="predictions-table")
    return (f"<h2>Predictions of the selected model</h2><p class=\"muted\">Best and worst of its {shown['rows']} validation rows "
            f"by {escape(view.title(key))}; every test-split prediction is in <code>best/predictions.jsonl</code>.</p>{table}")


def _states_section(view: StudyView) -> str:
    counts = view.states()
    html = rows_table(["state", "trials"], [[s, n] for s, n in sorted(counts.items())] + [["total", len(view.records)]],
                      table_id="state-counts")
    for state, attr, title in (("FAIL", "fail_reason", "Failed trials"), ("PRUNED", "prune_reason", "Pruned trials")):
        items = [f"<li>trial {r.number}: {escape(getattr(r, attr) or 'no reason recorded')}"
                 + (f" (traceback: <code>{escape(r.log_file)}</code>)" if r.log_file else "") + "</li>"
                 for r in view.records if r.state == state]
        if items:
            html += f'<h3>{title}</h3><ul class="reasons" id="{state.lower()}-reasons">{"".join(items)}</ul>'
    return html


def _shared_measurements_section(view: StudyView) -> str:
    """Which trials share one latency and memory measurement: those of one structure key (same graph and settings)."""
    groups: dict[str, list[int]] = {}
    for record in view.completed():
        key = record.structure_key
        if key is not None:
            groups.setdefault(key, []).append(record.number)
    shared = [(key, numbers) for key, numbers in groups.items() if len(numbers) > 1]
    if not shared:
        return ""
    items = "".join(f"<li>trials {', '.join(str(n) for n in sorted(numbers))}: structure <code>{escape(key[:12])}</code></li>"
                    for key, numbers in sorted(shared, key=lambda kv: min(kv[1])))
    return ('<h3>Shared measurements</h3><p class="muted">Trials built to one graph with the same settings (one structure key) run '
            "alike, so they carry one latency and memory measurement; their accuracy is each model's own.</p>"
            f'<ul id="shared-measurements">{items}</ul>')


def _image(path: Path, ident: str, alt: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img id="{escape(ident)}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def render(view: StudyView, selection: Selection, trials: Any, pareto: Any, plots: dict[str, Path]) -> str:
    record = selection.record
    chosen = record.number if record is not None else None
    objectives = ", ".join(f"{o.title} ({'max' if o.higher_is_better else 'min'}imise, {o.unit or 'no unit'})"
                           for o in view.objectives) or "none recorded"
    headline = (f"Selected trial {chosen} by the {selection.policy} policy: {selection.rule}." if chosen is not None
                else f"No trial was selected: {selection.rule}.")
    figures = [_image(plots["pareto.png"], "pareto-plot", "Pareto plot: accuracy against latency of every completed trial, "
                      "Pareto front joined, baseline and selected trial marked", "Trade-off between the objectives (pareto.png)."),
               _image(plots["history.png"], "history-plot", "Optimisation history: best so far and hypervolume against trial number",
                      "Best so far and hypervolume of the feasible front by trial (history.png).")]
    if "importance.png" in plots:
        figures.append(_image(plots["importance.png"], "importance-plot", "Parameter importance for the first objective (fANOVA)",
                              "Parameter importance (importance.png)."))
    else:
        figures.append('<p class="muted" id="importance-skipped">Parameter importance is shown once there are at least 4 completed '
                       "trials over at least one searched parameter.</p>")
    title = f"autotune report: {view.name}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="rule" id="selection-rule">{escape(headline)}</p>',
        _warning(view, selection),
        f'<p class="muted">Objectives: {escape(objectives)}. Provider: {escape(view.provider or "not recorded")}. '
        f"Trials: {len(view.records)}.</p>",
        "<h2>Selected model against the baseline</h2>", _metrics_section(view, selection),
        "<h2>Constraints</h2>", _constraints_section(view, selection),
        _bases_section(view),
        _predictions_section(view, selection),
        "<h2>Pareto set (feasible, non-dominated trials)</h2>", frame_table(pareto, table_id="pareto-table", selected=chosen,
                                                                          empty="None: no completed trial met the constraints."),
        "<h2>Plots</h2>", *figures,
        "<h2>Trials by state</h2>", _states_section(view),
        "<h2>All trials</h2>", frame_table(trials, table_id="trials-table", selected=chosen),
        _shared_measurements_section(view),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(view: StudyView, selection: Selection, trials: Any, pareto: Any, report_dir: Path) -> dict[str, Path]:
    """The plots and report.html under ``report_dir``; returns {file name: path} of what was written."""
    report_dir = Path(report_dir)
    files = write_plots(view, selection, report_dir)
    path = write_text(report_dir / "report.html", render(view, selection, trials, pareto, files))
    return {"report.html": path, **files}
