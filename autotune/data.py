"""Local data sets: load with ``datasets``, apply the text template (:mod:`autotune.template`), de-duplicate,
split, know the labels."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune.config.schema import DataConfig, RunConfig
from autotune.errors import ConfigError, DataError
from autotune.fileio import file_sha256
from autotune.template import CHAT_ANSWER, Template, encode_example, encode_row, stop_rule, template_of

__all__ = ["CHAT_ANSWER", "MAX_LABELS", "SMALL_SPLIT", "Dataset", "Template", "encode_example", "encode_row", "load_data",
           "resolve_data_name", "stop_rule", "template_of"]

# A data set is treated as classification when its answers form a small closed set.
MAX_LABELS = 50
# Below this many rows a split's accuracy interval is too wide to rank models (warned about).
SMALL_SPLIT = 100
log = logging.getLogger("autotune")


@dataclass
class Dataset:
    """Rows split into train and held-out eval, with the template and (for classification) labels."""

    name: str
    template: Template
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    labels: list[str] | None
    key: str
    files: list[Path] = field(default_factory=list)
    source_max_len: int = 1024
    test: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_classification(self) -> bool:
        return self.labels is not None

    def with_eval(self, rows: list[dict[str, Any]], tag: str) -> Dataset:
        """The same data set with ``rows`` where evaluators read (``eval``), under its own key (``tag``
        says which rows: a cached score of one set of rows is never read back for another)."""
        return replace(self, eval=rows, key=hashlib.sha256(f"{self.key}:{tag}".encode()).hexdigest())

    def on_test(self) -> Dataset:
        """The test rows where evaluators read."""
        if not self.test:
            raise DataError(self.name, "has no test split (set test_dataset_size)")
        return self.with_eval(self.test, "test")


def resolve_data_name(config: RunConfig, name: str | None, *, where: str, missing: str) -> str:
    """The data config a pass or metric reads: the one named, or the only one there is."""
    names = [d.name for d in config.data_configs]
    if name is None:
        if len(names) != 1:
            raise ConfigError(where, f"{missing} (have: {names or 'none'})")
        return names[0]
    if name not in names:
        raise ConfigError(where, f"no data config named '{name}' (have: {names})")
    return name


def _read_rows(config: DataConfig, where: str) -> list[dict[str, Any]]:
    import datasets

    datasets.disable_progress_bars()
    for path in config.data_files:
        if not path.is_file():
            raise DataError(f"{where}.data_files", f"no such file: {path}")
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise DataError(str(path), f"cannot read: {exc.strerror}") from None
        try:
            text = content.decode("utf-8") if config.data_name != "parquet" else None
        except UnicodeDecodeError as exc:
            raise DataError(str(path), f"not UTF-8 text (byte {exc.start})") from None
        if not content or (text is not None and not text.strip()):  # datasets raises a bare StopIteration on it
            raise DataError(str(path), "the data file is empty")
    # datasets logs a parse failure at ERROR before raising it; the user gets it once, as the one-line
    # error below (or, for a library failure, in the exception itself).
    datasets_log = logging.getLogger("datasets")
    level = datasets_log.level
    datasets_log.setLevel(logging.CRITICAL)
    try:
        ds = datasets.load_dataset(
            config.data_name,
            data_files=[str(p) for p in config.data_files],
            split=config.split,
            keep_in_memory=True,
            cache_dir=None,
        )
    except Exception as exc:
        reason = _unparsable(exc)
        if reason is None:  # not the file's fault (a library failure or a bug): keep its type and traceback
            raise
        raise DataError(str(config.data_files[0]), f"cannot read as {config.data_name}: {reason[:200]}") from None
    finally:
        datasets_log.setLevel(level)
    return [dict(row) for row in ds]


def _unparsable(exc: BaseException) -> str | None:
    """Why ``datasets`` could not parse a file (its first line), or None when the error is not about the file.

    A malformed file surfaces as a ValueError (pyarrow's ArrowInvalid, pandas' ParserError, json's
    JSONDecodeError, UnicodeDecodeError), raised bare or as the cause of datasets' DatasetGenerationError
    (whose own message says nothing).
    """
    from datasets.exceptions import DatasetGenerationError

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    parse_errors = [e for e in chain if isinstance(e, ValueError)]
    if not parse_errors or not isinstance(exc, (DatasetGenerationError, ValueError)):
        return None
    message = next((str(e).strip() for e in parse_errors if str(e).strip()), type(parse_errors[0]).__name__)
    return message.splitlines()[0]


def _rows_cached(config: DataConfig, where: str, rows_cache: Path | None, *,
                 deferred: list[tuple[Path, str]] | None = None) -> list[dict[str, Any]]:
    """:func:`_read_rows`, read back from ``rows_cache`` when these files (by content) were read before:
    importing and running ``datasets`` takes seconds, a cached rerun should not. Only rows that survive a
    JSON round trip unchanged are cached (anything else is read through ``datasets`` every time).
    ``deferred``: a list that receives the (file, text) to write instead of writing it (a run that may still be
    refused writes nothing; its caller writes them once every input has passed)."""
    if rows_cache is None or not all(p.is_file() for p in config.data_files):
        return _read_rows(config, where)
    digest = hashlib.sha256(json.dumps([config.data_name, config.split]).encode())
    for path in config.data_files:
        digest.update(file_sha256(path).encode())
    stored = rows_cache / f"{digest.hexdigest()}.json"
    try:
        return list(json.loads(stored.read_text()))
    except (OSError, ValueError):
        pass
    rows = _read_rows(config, where)
    try:
        text = json.dumps(rows)
        if json.loads(text) == rows:
            if deferred is not None:
                deferred.append((stored, text))
                return rows
            from autotune.fileio import write_text

            write_text(stored, text)
    except (TypeError, ValueError, OSError):
        pass  # rows JSON cannot hold as they are, or an unwritable cache: read through datasets next time too
    return rows


def load_data(config: DataConfig, *, where: str = "data_configs[0]", template_where: str | None = None,
              rows_cache: Path | None = None, deferred_rows: list[tuple[Path, str]] | None = None) -> Dataset:
    """Load, template, de-duplicate and split one data config (deterministic for a given seed).
    ``rows_cache``: a folder that keeps the parsed rows of each data file content (see :func:`_rows_cached`);
    ``deferred_rows``: collects what would be written there instead (see :func:`_rows_cached`)."""
    template = template_of(config, where=where, template_where=template_where)
    template_where = template_where or (f"{where}.text_cols" if template.chat else f"{where}.text_template")
    rows = _rows_cached(config, where, rows_cache, deferred=deferred_rows)
    if not rows:
        raise DataError(str(config.data_files[0]), "the data set has no rows")
    available = set(rows[0])
    for column in template.columns:
        if column not in available:
            raise DataError(template_where, f"the template names column '{column}' but the data has only {sorted(available)}")
    if config.text_cols:
        for column in config.text_cols:
            if column not in available:
                raise DataError(f"{where}.text_cols", f"column '{column}' is not in the data (has {sorted(available)})")
    source = str(config.data_files[0]) if len(config.data_files) == 1 else f"{where}.data_files"
    # De-duplicate on the prompt before splitting, so no phrase lands on both sides.
    seen: set[str] = set()
    unique: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        for column in template.columns:
            value = row.get(column)
            if value is None or (column == template.answer_column and not str(value).strip()):
                what = "an empty" if value is not None else "no"
                role = "answer" if column == template.answer_column else "prompt"
                raise DataError(source, f"row {number} has {what} '{column}' (the {role} column of {template_where}): every row "
                                        "must be labelled with a non-empty answer and have every prompt column")
        # De-duplicated on the prompt as written (a text template's rendering; a chat's user turn).
        prompt = template.prompt(row) if not template.chat else str(row[template.columns[0]])
        if prompt in seen:
            continue
        seen.add(prompt)
        unique.append({c: str(row[c]) for c in template.columns})
    if len(unique) < 2:
        raise DataError(str(config.data_files[0]), f"need at least 2 labelled rows, found {len(unique)}")
    random.Random(config.split_seed).shuffle(unique)
    if config.max_samples:
        unique = unique[: config.max_samples]
    size = config.eval_dataset_size
    n_eval = int(size) if size >= 1 else max(1, round(len(unique) * size))
    if n_eval >= len(unique):
        raise DataError(f"{where}.eval_dataset_size", f"asks for {n_eval} held-out rows but the data has only {len(unique)}")
    test_size = config.test_dataset_size
    n_test = 0 if test_size is None else (int(test_size) if test_size >= 1 else max(1, round(len(unique) * test_size)))
    if n_eval + n_test >= len(unique):
        raise DataError(f"{where}.test_dataset_size", f"validation ({n_eval}) and test ({n_test}) rows leave no training rows "
                        f"of {len(unique)}")
    for split, n, key in (("validation", n_eval, "eval_dataset_size"), ("test", n_test, "test_dataset_size")):
        if 0 < n < SMALL_SPLIT:
            log.warning("%s.%s: the %s split has %d rows; a 95%% interval on accuracy is about +-%.0f points wide at "
                        "that size, too wide to rank close models", where, key, split, n, 100 * 1.96 * (0.25 / n) ** 0.5)
    answers = sorted({r[template.answer_column] for r in unique})
    labels = answers if len(answers) <= MAX_LABELS and len(answers) * 2 <= len(unique) else None
    digest = hashlib.sha256()
    for path in config.data_files:
        digest.update(file_sha256(path).encode())
    described = {"template": template.text, "eval": size, "seed": config.split_seed, "max": config.max_samples,
                 "split": config.split, "max_len": config.source_max_len}
    if n_test:  # only then: keys of data sets without a test split stay as they were
        described["test"] = test_size
    digest.update(json.dumps(described, sort_keys=True).encode())
    return Dataset(
        name=config.name,
        template=template,
        train=unique[n_eval + n_test:],
        eval=unique[:n_eval],
        test=unique[n_eval:n_eval + n_test],
        labels=labels,
        key=digest.hexdigest(),
        files=list(config.data_files),
        source_max_len=config.source_max_len,
    )
