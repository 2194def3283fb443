"""The study report from a synthetic in-memory study: files, HTML content, and a headless Chromium render."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

from autotune.records import RECORD_ATTR, StudyView, TrialRecord
from autotune.report.frames import trials_frame
from autotune.report.html import write_report
from autotune.selection import pareto_set, select
from tests.conftest import skip_or_fail_in_ci

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ACC, LAT, SIZE = "accuracy-accuracy", "latency-decode_ms_per_token_p50", "footprint-size_mb"
OBJECTIVES = [
    {"metric": ACC, "higher_is_better": True, "unit": "ratio"},
    {"metric": LAT, "higher_is_better": False, "unit": "ms/token"},
    {"metric": SIZE, "higher_is_better": False, "unit": "MB"},
]
BOUNDS = [
    {"metric": ACC, "value": 0.6, "higher_is_better": True, "goal": "max-degradation 0.05"},
    {"metric": LAT, "value": 5.0, "higher_is_better": False, "goal": "threshold 5.0"},
]
# number: (lora.r, build.precision, accuracy, latency ms/token, size MB); None = failed / pruned
TRIALS: list[tuple[int, str, float, float, float] | str] = [
    (4, "fp32", 0.62, 6.0, 540.0),  # 0: too slow
    (8, "int4", 0.70, 2.034567, 140.0),  # 1: Pareto
    (16, "int4", 0.78, 2.1, 145.0),  # 2: Pareto
    (32, "int4", 0.74, 2.2, 150.0),  # 3: dominated by 2
    (8, "fp32", 0.80, 4.5, 540.0),  # 4: Pareto, most accurate feasible -> selected
    (16, "fp32", 0.83, 5.5, 545.0),  # 5: too slow
    (32, "fp32", 0.55, 4.4, 550.0),  # 6: not accurate enough
    (4, "int4", 0.66, 1.9, 138.0),  # 7: Pareto
    "FAIL",  # 8
    "PRUNED",  # 9
    (16, "int4", 0.77, 2.0, 145.0),  # 10: Pareto
]
PARETO = [1, 2, 4, 7, 10]
BASELINE = {
    ACC: {"name": "accuracy", "value": 0.6, "unit": "ratio", "higher_is_better": True, "n": 100, "ci_low": 0.5, "ci_high": 0.69},
    LAT: {"name": "decode_ms_per_token_p50", "value": 8.0, "unit": "ms/token", "higher_is_better": False},
    SIZE: {"name": "size_mb", "value": 540.0, "unit": "MB", "higher_is_better": False},
}


def _violation(bound: dict[str, Any], value: float) -> float:
    return bound["value"] - value if bound["higher_is_better"] else value - bound["value"]


def make_study(bounds: list[dict[str, Any]], *, name: str = "tone & <study>", objectives: list[dict[str, Any]] | None = None,
               trials: list[Any] | None = None) -> Any:
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = objectives or OBJECTIVES
    study = optuna.create_study(study_name=name, directions=["maximize" if o["higher_is_better"] else "minimize" for o in objectives])
    study.set_user_attr("objectives", objectives)
    study.set_user_attr("bounds", bounds)
    study.set_user_attr("provider", "CPUExecutionProvider")
    study.set_user_attr("autotune_baseline", BASELINE)
    dists = {"lora.r": CategoricalDistribution([4, 8, 16, 32]), "build.precision": CategoricalDistribution(["fp32", "int4"])}
    for number, spec in enumerate(TRIALS if trials is None else trials):
        if isinstance(spec, str):
            record = TrialRecord(number=number, state=spec, point={"lora.r": 8, "build.precision": "int4"},
                                 fail_reason="RuntimeError: out of memory" if spec == "FAIL" else None,
                                 prune_reason="eval loss 12% worse than the median at step 20" if spec == "PRUNED" else None)
            study.add_trial(create_trial(state=TrialState[spec], params={"lora.r": 8, "build.precision": "int4"}, distributions=dists,
                                         user_attrs={RECORD_ATTR: record.model_dump(mode="json")}))
            continue
        r, precision, acc, lat, size = spec
        metrics = {
            ACC: {"name": "accuracy", "value": acc, "unit": "ratio", "higher_is_better": True, "n": 100,
                  "ci_low": acc - 0.09, "ci_high": min(1.0, acc + 0.08)},
            LAT: {"name": "decode_ms_per_token_p50", "value": lat, "unit": "ms/token", "higher_is_better": False},
            SIZE: {"name": "size_mb", "value": size, "unit": "MB", "higher_is_better": False},
        }
        values = {k: m["value"] for k, m in metrics.items()}
        constraints = {b["metric"]: _violation(b, values[b["metric"]]) for b in bounds}
        record = TrialRecord(
            number=number, state="COMPLETE", point={"lora.r": r, "build.precision": precision},
            params={"lora": {"r": r}, "build": {"precision": precision}}, metrics=metrics,
            objectives={o["metric"]: values[o["metric"]] for o in objectives}, constraints=constraints,
            feasible=all(v <= 0 for v in constraints.values()), model_key=f"key{number}", seconds=10.0 + number,
        )
        study.add_trial(create_trial(params={"lora.r": r, "build.precision": precision}, distributions=dists,
                                     values=[values[o["metric"]] for o in objectives],
                                     user_attrs={RECORD_ATTR: record.model_dump(mode="json")}))
    return study


def build_report(tmp_path: Path, bounds: list[dict[str, Any]], **kwargs: Any) -> tuple[dict[str, Path], Any, str]:
    view = StudyView.load(make_study(bounds, **kwargs))
    selection = select(view)
    files = write_report(view, selection, trials_frame(view.records), trials_frame(pareto_set(view)), tmp_path)
    return files, selection, files["report.html"].read_text(encoding="utf-8")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def table_trials(html: str, table_id: str) -> list[int]:
    match = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert match, f"no table {table_id}"
    return [int(n) for n in re.findall(r'<tr data-trial="(\d+)"', match.group(1))]


def test_report_files_and_content(tmp_path: Path) -> None:
    files, selection, html = build_report(tmp_path, BOUNDS)
    assert set(files) == {"report.html", "pareto.png", "history.png", "importance.png"}
    for name in ("pareto.png", "history.png", "importance.png"):
        assert files[name] == tmp_path / name and files[name].is_file()
        width, height = png_size(files[name])
        assert width >= 900 and height >= 280, (name, width, height)
        assert b"http" not in files[name].read_bytes()
    assert selection.feasible and selection.record is not None and selection.record.number == 4
    assert "<p class=\"rule\" id=\"selection-rule\">Selected trial 4" in html
    assert selection.rule.split(";")[0] in html  # the rule, verbatim (no characters that need escaping there)
    assert "No trial met the constraints" not in html
    assert table_trials(html, "pareto-table") == PARETO
    assert table_trials(html, "trials-table") == list(range(len(TRIALS)))
    assert '<tr data-trial="4" class="selected">' in html
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert len(re.findall(r'<img id="[a-z-]+" alt="[^"]+" src="data:image/png;base64,', html)) == 3
    assert re.search(r'<img id="pareto-plot" alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)
    # numbers to 4 significant digits, text escaped
    assert "2.035" in html and "2.034567" not in html
    assert "autotune report: tone &amp; &lt;study&gt;" in html and "<study>" not in html
    # baseline beside the selected model, constraints, states with reasons
    assert 'id="selected-metrics"' in html and "+0.2 (+33.3%)" in html and "[0.71, 0.88]" in html
    assert 'id="constraints"' in html and "≥ 0.6" in html and "≤ 5" in html
    assert "RuntimeError: out of memory" in html and "eval loss 12% worse than the median at step 20" in html
    assert re.search(r"<td class=\"text\">COMPLETE</td><td>9</td>", html)
    assert not list(tmp_path.glob(".*.tmp"))


def test_infeasible_study_warns_and_says_by_how_much(tmp_path: Path) -> None:
    bounds = [{"metric": ACC, "value": 0.95, "higher_is_better": True, "goal": "threshold 0.95"}]
    files, selection, html = build_report(tmp_path, bounds)
    assert not selection.feasible and selection.record is not None and selection.record.number == 5
    assert 'class="warning" id="infeasible-warning"' in html
    assert "No trial met the constraints." in html
    assert f"trial 5, was exported anyway; it missed {ACC} by 0.12" in html
    assert '<p class="muted" id="pareto-table">None: no completed trial met the constraints.</p>' in html
    assert png_size(files["pareto.png"])[0] >= 900 and png_size(files["history.png"])[0] >= 900


def test_single_objective_and_few_trials(tmp_path: Path) -> None:
    (tmp_path / "importance.png").write_bytes(PNG_MAGIC)  # stale from an earlier report
    files, selection, html = build_report(tmp_path, [], objectives=OBJECTIVES[:1], trials=TRIALS[:3])
    assert set(files) == {"report.html", "pareto.png", "history.png"}
    assert not (tmp_path / "importance.png").exists()
    assert 'id="importance-skipped"' in html and selection.record is not None and selection.record.number == 2
    assert png_size(files["pareto.png"])[0] >= 900


def test_empty_study_still_writes_a_report(tmp_path: Path) -> None:
    files, selection, html = build_report(tmp_path, BOUNDS, trials=["FAIL"])
    assert selection.record is None and "No trial met the constraints." in html
    assert png_size(files["pareto.png"])[0] >= 900 and "importance.png" not in files


def test_write_results_includes_the_report(tmp_path: Path) -> None:
    from autotune.report.results import write_results

    view = StudyView.load(make_study(BOUNDS))
    files = write_results(view, select(view), tmp_path)
    for name in ("trials.csv", "pareto.csv", "selection.json", "report.html", "pareto.png", "history.png", "importance.png"):
        assert files[name].is_file(), name


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    assert exe
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={cwd / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    if shutil.which("chromium") is None:  # .ci/run installs it: under CI=true its absence fails the test
        skip_or_fail_in_ci("chromium is not installed (apt-get install chromium): the headless render is not checked")
    # the console check must be able to fail: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefined_fn()</script></body></html>", encoding="utf-8")
    assert any("Uncaught" in line for line in console_errors(_chromium("--dump-dom", bad.as_uri(), cwd=tmp_path).stderr))
    report_dir = tmp_path / "report"
    files, _, _ = build_report(report_dir, BOUNDS)
    url = files["report.html"].resolve().as_uri()
    dom = _chromium("--dump-dom", url, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'<img id="pareto-plot" alt="[^"]+" src="data:image/png;base64,', dom.stdout), dom.stdout[:2000]
    assert 'id="pareto-table"' in dom.stdout and "Selected trial 4" in dom.stdout
    assert console_errors(dom.stderr) == [], "\n".join(console_errors(dom.stderr))
    shot = tmp_path / "report.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url, cwd=tmp_path)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert console_errors(result.stderr) == [], "\n".join(console_errors(result.stderr))
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 10_000  # the screenshot stays in tmp_path
