"""Local data sets: load with ``datasets``, apply the text template, de-duplicate, split, know the labels.

The template's last placeholder is the answer (``{tone}`` in ``"### Text: {phrase}\\n### The tone is:\\n{tone}"``);
everything before it is the prompt, and text after it (``"\\n<|end|>"`` in
``"<|user|>\\n{Question}<|end|>\\n<|assistant|>\\n{Best Answer}\\n<|end|>"``) is the answer's terminator:
trained as part of the answer (the model learns to stop), a stop rule for generation, stripped before
scoring. With ``chat_template: true`` the tokenizer's own chat template renders a user turn (the first of
``text_cols``) and an assistant turn (the second): what the template writes after the assistant's content
(``"<|im_end|>\n"``) is the terminator. Training and every evaluator use :func:`encode_row` so a trained model
is asked exactly the prompt it learnt to answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autotune.config.schema import DataConfig, RunConfig
from autotune.errors import ConfigError, DataError
from autotune.fileio import file_sha256

# A data set is treated as classification when its answers form a small closed set.
MAX_LABELS = 50
# Below this many rows a split's accuracy interval is too wide to rank models (warned about).
SMALL_SPLIT = 100
log = logging.getLogger("autotune")
# Where a chat template's assistant content goes: rendered once with this in its place, the text before it
# is the prompt and the text after it the terminator (no real answer contains it).
CHAT_ANSWER = "\x00autotune-answer\x00"


@dataclass(frozen=True)
class Template:
    text: str
    columns: tuple[str, ...]
    answer_column: str
    prompt_text: str  # the template up to the answer placeholder
    terminator: str = ""  # the template after the answer placeholder ("" when the answer ends it)
    chat: bool = False  # rendered by the tokenizer's chat template (prompt and terminator depend on it)
    system_prompt: str | None = None  # a chat template's system turn

    @classmethod
    def parse(cls, text: str, *, where: str) -> Template:
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise DataError(where, f"bad template: {exc}") from None
        columns = tuple(name for _, name, _, _ in parts if name is not None)
        if not columns or any(c == "" or c.isdigit() for c in columns):
            raise DataError(where, "the template needs named placeholders such as {phrase} and {tone}")
        answer = columns[-1]
        if list(columns).count(answer) > 1:
            raise DataError(where, f"the answer placeholder {{{answer}}} (the last one) appears more than once")
        if "{" + answer + "}" not in text:
            raise DataError(where, f"the answer placeholder {{{answer}}} cannot carry a format spec or conversion")
        placeholder = text.rindex("{" + answer + "}")
        prompt = text[:placeholder]
        # Text after the answer is its terminator (literal: no placeholder can follow the last one).
        terminator = text[placeholder + len(answer) + 2:].replace("{{", "{").replace("}}", "}")
        if not terminator.strip():
            terminator = ""  # trailing whitespace only: the answer ends the template
        return cls(text=text, columns=columns, answer_column=answer, prompt_text=prompt, terminator=terminator)

    @classmethod
    def chat_turns(cls, columns: list[str] | None, *, system_prompt: str | None, where: str) -> Template:
        """A user turn (``columns[0]``) and an assistant turn (``columns[1]``) in the tokenizer's chat template
        (``where``: the text_cols key, for errors)."""
        if not columns or len(columns) != 2 or len(set(columns)) != 2 or not all(isinstance(c, str) and c for c in columns):
            raise ConfigError(where, "chat_template: true needs text_cols: [prompt column, answer column] "
                                                  f"(two different columns), got {columns!r}")
        text = f"chat_template(system={system_prompt!r}, user={{{columns[0]}}}, assistant={{{columns[1]}}})"
        return cls(text=text, columns=tuple(columns), answer_column=columns[1], prompt_text="", chat=True,
                   system_prompt=system_prompt)

    def render(self, row: dict[str, Any], tokenizer: Any = None) -> tuple[str, str]:
        """(prompt, terminator) of ``row``: a chat template's through ``tokenizer``."""
        if not self.chat:
            return self.prompt_text.format(**{c: row.get(c, "") for c in self.columns if c != self.answer_column}), self.terminator
        if tokenizer is None:
            raise TypeError("a chat template renders through the model's tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("chat_template", "true, but the model's tokenizer has no chat template (set text_template instead)")
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages += [{"role": "user", "content": str(row.get(self.columns[0], ""))},
                     {"role": "assistant", "content": CHAT_ANSWER}]
        from jinja2 import TemplateError

        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except TemplateError as exc:  # the template's own refusal (e.g. no system role): the user's setting
            raise DataError("chat_template", f"the tokenizer's chat template refuses these turns: {str(exc)[:200]}"
                            + (" (it may not take a system_prompt)" if self.system_prompt else "")) from None
        if not isinstance(text, str) or text.count(CHAT_ANSWER) != 1:
            raise DataError("chat_template", "the tokenizer's chat template does not write the assistant turn's content once")
        prompt, terminator = text.split(CHAT_ANSWER)
        return prompt, terminator

    def check_tokenizer(self, tokenizer: Any, *, where: str) -> None:
        """A chat template renders through ``tokenizer`` (one-line error at ``<where>.chat_template`` if not);
        a text template needs nothing of it."""
        if not self.chat:
            return
        try:
            self.render({self.columns[0]: "x"}, tokenizer)
        except DataError as exc:
            raise DataError(f"{where}.{exc.where}", exc.message) from None

    def stop_text(self, tokenizer: Any = None) -> str | None:
        """What generation stops at besides EOS: the terminator without its surrounding whitespace (a
        model that learnt "\\n<|end|>" may write " <|end|>"), None without a terminator."""
        terminator = self.render({}, tokenizer)[1]
        return (terminator.strip() or terminator) or None

    def prompt(self, row: dict[str, Any], tokenizer: Any = None) -> str:
        return self.render(row, tokenizer)[0]

    def answer(self, row: dict[str, Any]) -> str:
        """The reference answer (what a metric compares a generation with)."""
        return str(row[self.answer_column])

    def target(self, row: dict[str, Any], tokenizer: Any = None) -> str:
        """What training teaches after the prompt: the answer and its terminator."""
        return self.answer(row) + self.render(row, tokenizer)[1]

    def answer_ids(self, tokenizer: Any, answer: str) -> list[int]:
        """Token ids of ``answer`` as trained after a prompt: with its terminator, and EOS after a text
        template (a chat template's terminator ends the turn itself)."""
        ids = list(tokenizer(answer + self.render({}, tokenizer)[1], add_special_tokens=False)["input_ids"])
        eos = tokenizer.eos_token_id
        return ids if self.chat or eos is None else [*ids, eos]

    def cut(self, generated: str, tokenizer: Any = None) -> str:
        """A generation as a metric reads it: up to the terminator, without surrounding whitespace."""
        stop = self.stop_text(tokenizer)
        if stop and stop in generated:
            generated = generated[: generated.index(stop)]
        return generated.strip()


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
    seen: set[tuple[str, ...]] = set()
    unique: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        for column in template.columns:
            value = row.get(column)
            if value is None or (column == template.answer_column and not str(value).strip()):
                what = "an empty" if value is not None else "no"
                role = "answer" if column == template.answer_column else "prompt"
                raise DataError(source, f"row {number} has {what} '{column}' (the {role} column of {template_where}): every row "
                                        "must be labelled with a non-empty answer and have every prompt column")
        prompt = tuple(str(row[c]) for c in template.columns if c != template.answer_column)
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


def template_of(config: DataConfig, *, where: str, template_where: str | None = None,
                path_of: Callable[[str], str] | None = None) -> Template:
    """The data config's template: its ``text_template``, or with ``chat_template: true`` the tokenizer's
    chat template over ``text_cols`` (never both: which one trains the model would be a guess). ``path_of``:
    where a key was written (the config loader's), else ``<where>.<key>``."""
    at = path_of or (lambda key: f"{where}.{key}")
    if config.chat_template:
        if config.text_template is not None:
            raise ConfigError(at("chat_template"), "true together with text_template: use one (the tokenizer's chat "
                                                 "template renders text_cols, or your text_template does)")
        return Template.chat_turns(config.text_cols, system_prompt=config.system_prompt, where=at("text_cols"))
    if config.system_prompt is not None:
        raise ConfigError(at("system_prompt"), "applies to chat_template: true only (write it into text_template instead)")
    if config.text_template is None:
        raise ConfigError(at("text_template"), "required key is missing (or set chat_template: true with text_cols: "
                                             "[prompt column, answer column])")
    return Template.parse(config.text_template, where=template_where or at("text_template"))


def stop_rule(tokenizer: Any, template: Template) -> Callable[[list[int]], bool] | None:
    """Whether the tokens generated so far have written the template's terminator (the answer is over), for
    :meth:`autotune.evaluation.backends.Backend.generate`'s ``stop``; None without a terminator (EOS ends it)."""
    stop = template.stop_text(tokenizer)
    if stop is None:
        return None
    eos = tokenizer.eos_token_id
    window = max(8, 2 * len(tokenizer(stop, add_special_tokens=False)["input_ids"]) + 4)

    def stops(tokens: list[int]) -> bool:
        return stop in tokenizer.decode([t for t in tokens[-window:] if t != eos], skip_special_tokens=False)

    return stops


def encode_row(tokenizer: Any, template: Template, row: dict[str, Any], *, max_len: int,
               with_answer: bool = True) -> tuple[list[int], int]:
    """Token ids of one row as training sees it (prompt, answer, terminator; with ``with_answer`` False the
    prompt alone, as generation sees it) and the prompt's length in tokens."""
    prompt = template.prompt(row, tokenizer)
    answer = template.target(row, tokenizer) if with_answer else None
    return encode_example(tokenizer, prompt, answer, max_len=max_len, chat=template.chat)


def encode_example(tokenizer: Any, prompt: str, answer: str | None, *, max_len: int,
                   chat: bool = False) -> tuple[list[int], int]:
    """Token ids of prompt (+ answer + EOS) and the prompt's length in tokens.

    Prompt and answer are tokenised separately and joined, so the prompt tokens are identical
    whether or not the answer follows (evaluators score label continuations after the same ids).
    ``chat``: the prompt was rendered by a chat template, which writes its own BOS and ends the answer's
    turn itself: no special tokens added, no EOS appended, and the ids are the whole text's (what
    ``apply_chat_template`` gives) whenever its prompt tokens are the prompt's own.
    """
    prompt_ids = list(tokenizer(prompt, add_special_tokens=not chat)["input_ids"])
    if answer is None:
        return prompt_ids[-max_len:], min(len(prompt_ids), max_len)
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if chat:
        whole = list(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"])
        ids = whole if whole[: len(prompt_ids)] == prompt_ids else prompt_ids + answer_ids
    else:
        ids = prompt_ids + answer_ids + ([eos] if eos is not None else [])
    if len(ids) > max_len:  # keep the answer: cut the start of the prompt
        cut = len(ids) - max_len
        ids = ids[cut:]
        return ids, len(prompt_ids) - cut
    return ids, len(prompt_ids)
