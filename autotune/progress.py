"""Live progress in the terminal: a bar for training steps and a line per pass."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autotune.pipeline import PassRecord, PipelineObserver
from autotune.plan import Step


class RichObserver(PipelineObserver):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=self.console, transient=True,
        )
        self.task: Any = None
        self.prefix = ""

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def pass_started(self, step: Step, params: dict[str, Any]) -> None:
        self.current = step.name
        self.console.print(f"{self.prefix}[cyan]{step.name}[/] ({step.pass_cls.type_name}) running…", highlight=False)

    def pass_finished(self, record: PassRecord) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        how = "[green]cache hit[/]" if record.cache_hit else f"{record.seconds:.1f} s"
        self.console.print(f"{self.prefix}[cyan]{record.name:<10}[/] {record.type:<20} {how}  [dim]{record.key[:12]}[/]", highlight=False)

    def training_step(self, step: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(f"{self.prefix}training", total=total)
        self.progress.update(self.task, completed=step, total=total)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)
