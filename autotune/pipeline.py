"""Run the passes for one point of the search space, each through the content-addressed cache.

Keys are computed for the whole chain first (they depend only on the parent key, the pass type, its
resolved parameters and the context that matters), so only the longest cached prefix is read back
and only the passes after it run: trials that share fine-tune parameters fine-tune once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from autotune.cache import Cache, hash_key
from autotune.config.schema import RunConfig
from autotune.context import KeyContext, PassContext
from autotune.data import Dataset, load_data
from autotune.device import release_memory
from autotune.errors import DiskFullError, UserError
from autotune.models.handle import ModelHandle
from autotune.models.source import candidate_error, check_input_model, resolve_input_model
from autotune.plan import Step, base_of, build_plan, resolve

log = logging.getLogger("autotune")


class ChainLink(NamedTuple):
    """One pass of a trial's chain: its step, its resolved parameters and its cache key (the key of its output)."""

    step: Step
    params: Any
    key: str


@dataclass
class PassRecord:
    name: str
    type: str
    key: str
    params: dict[str, Any]
    seconds: float
    cache_hit: bool
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PipelineResult:
    model: ModelHandle
    input_model: ModelHandle
    passes: list[PassRecord] = field(default_factory=list)


class PipelineObserver:
    """Hooks for progress display; the default logs one line per pass."""

    def pass_started(self, step: Step, params: dict[str, Any]) -> None:
        log.debug("pass %s (%s) starting with %s", step.name, step.pass_cls.type_name, params)

    def pass_finished(self, record: PassRecord) -> None:
        source = "cache hit" if record.cache_hit else f"ran in {record.seconds:.1f} s"
        log.info("pass %-10s %-20s %s  [%s]", record.name, record.type, source, record.key[:12])

    def training_step(self, step: int, total: int) -> None:
        pass


class Pipeline:
    def __init__(self, config: RunConfig, *, cache: Cache, observer: PipelineObserver | None = None) -> None:
        self.config = config
        self.cache = cache  # the run's cache (RunContext builds it, over the artifact store when one is set)
        self.observer = observer or PipelineObserver()
        self.slots = build_plan(config)
        self._inputs: dict[str | None, ModelHandle] = {}  # by base name (None: the one input model)
        self._data: dict[str, Dataset] = {}
        self._device: str | None = None
        # key -> the PassContext fields its step's cache_context decided (a fine-tune's: the CPU precision probe's decision)
        self._run_fields: dict[str, dict[str, Any]] = {}
        # The study's precision decisions (autotune.records.StudyPrecision), set by the study that runs this pipeline.
        self.shared_precision: Any = None

    # -- inputs ---------------------------------------------------------------------------------
    def preflight(self, extra_data: list[str] | None = None) -> None:
        """Read every input the run needs and refuse bad ones before anything is written."""
        from autotune.config_checks import check_model_before_running
        from autotune.plan import all_steps

        names = {s.data_name for s in all_steps(self.slots) if s.data_name} | set(extra_data or [])
        deferred: list[tuple[Path, str]] = []  # a refused run writes nothing, not even the rows cache
        for name in sorted(names):
            self.data(name, deferred_rows=deferred)
        from autotune.config_checks import check_candidate_tokenizer

        for base in self.config.base_names or [None]:
            config = self.config.for_base(base)
            try:
                source = check_input_model(config)
                check_model_before_running(config, source)  # a Hub model is local only now
                if base is not None:
                    check_candidate_tokenizer(config, source, [self._data[n] for n in sorted(names)])
            except UserError as exc:
                if base is None:
                    raise
                raise candidate_error(self.config, base, exc) from None
        self.cache.sweep()
        from autotune.fileio import write_text

        for path, text in deferred:  # every input passed: keep the parsed rows for the next run
            with contextlib.suppress(OSError):
                write_text(path, text)

    def data_names(self) -> list[str]:
        """The data configs loaded so far (after the preflight: every one the run reads)."""
        return list(self._data)

    def data(self, name: str, *, deferred_rows: list[tuple[Path, str]] | None = None) -> Dataset:
        if name not in self._data:
            index = next(i for i, d in enumerate(self.config.data_configs) if d.name == name)
            self._data[name] = load_data(self.config.data_configs[index], where=f"data_configs[{index}]",
                                        rows_cache=self.cache.root / "rows", deferred_rows=deferred_rows)
        return self._data[name]

    @property
    def device(self) -> str:
        """``engine.device`` resolved (auto -> cuda or cpu), once: it may import torch."""
        if self._device is None:
            from autotune.device import resolve_device

            self._device = resolve_device(self.config.engine.device)
        return self._device

    def input_model(self, base: str | None = None) -> ModelHandle:
        """The base model ``base`` (a candidate's name; None: the default one) as an HF folder handle, once."""
        if base not in self._inputs:
            self._inputs[base] = resolve_input_model(self.config.for_base(base), self.cache)
        return self._inputs[base]

    def _key_context(self, step: Step, parent: str, base: str | None) -> KeyContext:
        """What of the run ``step``'s ``cache_context`` may read (the device and the data on first use)."""
        name = step.data_name
        return KeyContext(parent=parent, input_model=self.input_model(base), cache_root=self.cache.root, scratch=self.cache.tmp,
                          read_device=lambda: self.device, read_data=(lambda: self.data(name)) if name else None,
                          trust_remote_code=self.config.for_base(base).input_model.trust_remote_code,
                          shared_precision=self.shared_precision)

    # -- running --------------------------------------------------------------------------------
    def keys(self, point: dict[str, Any] | None = None) -> list[ChainLink]:
        """(step, params, key) for every pass of the chain at ``point``."""
        return self._chain(resolve(self.slots, point), point)

    def _chain(self, steps: list[Step], point: dict[str, Any] | None, base: str | None = None) -> list[ChainLink]:
        base = base if base is not None else base_of(point)
        parent = self.input_model(base).key
        chain: list[ChainLink] = []
        for step in steps:
            params = step.params(point)
            payload: dict[str, Any] = {"parent": parent, "pass": step.pass_cls.type_name, "params": params.resolved()}
            if step.pass_cls.provider_in_key:
                payload["provider"] = self.config.engine.provider
            if step.data_name and step.pass_cls().reads_data(params):
                payload["data"] = self.data(step.data_name).key
            context = step.pass_cls().cache_context(params, self._key_context(step, parent, base))
            if context is not None and context.key:  # empty for CPU fp32 training, whose keys predate engine.device
                payload["runtime"] = context.key
            parent = hash_key(payload)
            if context is not None and context.run:
                self._run_fields[parent] = context.run
            chain.append(ChainLink(step, params, parent))
        return chain

    def run(
        self,
        point: dict[str, Any] | None = None,
        *,
        report_intermediate: Callable[[int, float], None] | None = None,
        deadline: float | None = None,
    ) -> PipelineResult:
        chain, base = self.keys(point), base_of(point)
        with self.cache.in_use([self.input_model(base).key] + [key for _, _, key in chain]):
            return self._run_chain(chain, report_intermediate, deadline, base)

    def run_baseline_build(self, base: str | None = None) -> PipelineResult:
        """The input model (the base ``base``) built as fp32 ONNX for the target provider, through the cache:
        the baseline measured like the trials (same runtime, same provider), not PyTorch eager beside ONNX."""
        from autotune.passes import get_pass

        step = Step(name="baseline", pass_cls=get_pass("ModelBuilder", path="(baseline)"), fixed={"precision": "fp32"},
                    space={}, origin="baseline")
        chain = self._chain([step], None, base)
        with self.cache.in_use([self.input_model(base).key] + [key for _, _, key in chain]):
            return self._run_chain(chain, None, None, base)

    def _run_chain(self, chain: list[ChainLink], report_intermediate: Any, deadline: float | None,
                   base: str | None = None) -> PipelineResult:
        source = self.input_model(base)
        result = PipelineResult(model=source, input_model=source)
        handles: list[ModelHandle] = [source]
        start = self._cached_prefix(chain, handles, base)
        for i, (step, params, key) in enumerate(chain):
            if i < start:
                result.passes.append(PassRecord(step.name, step.pass_cls.type_name, key, params.resolved(), 0.0, True, handles[i + 1].kind))
                self.observer.pass_finished(result.passes[-1])
                continue
            parent = handles[-1]
            self.observer.pass_started(step, params.resolved())
            began = time.perf_counter()
            if deadline is not None and time.monotonic() > deadline:
                from autotune.context import TrialTimeout

                raise TrialTimeout(f"trial_timeout exceeded before pass {step.name}")
            handle, ran = self._run_pass(step, params, key, parent, report_intermediate, deadline, base)
            record = PassRecord(step.name, step.pass_cls.type_name, key, params.resolved(),
                                time.perf_counter() - began, not ran, handle.kind)
            result.passes.append(record)
            self.observer.pass_finished(record)
            handles.append(handle)
        result.model = handles[-1]
        return result

    def _cached_prefix(self, chain: list[ChainLink], handles: list[ModelHandle], base: str | None = None) -> int:
        """Fill ``handles`` with the outputs of the longest cached prefix; return its length."""
        for end in range(len(chain), 0, -1):
            if not self.cache.has(chain[end - 1].key):
                continue
            fetched = self._fetch(chain, end, base)
            if fetched is not None:
                handles.extend(fetched)
                return end
        return 0

    def _fetch(self, chain: list[ChainLink], end: int, base: str | None = None) -> list[ModelHandle] | None:
        """Handles for chain[:end], reading back (and verifying) only the entries that are needed."""
        needed = {end - 1}
        if chain[end - 1].step.pass_cls.output_kind == "adapter" and end >= 2:
            needed.add(end - 2)  # an adapter needs its base to be merged
        handles: list[ModelHandle] = []
        previous = self.input_model(base)
        for i in range(end):
            step, _, key = chain[i]
            kind = step.pass_cls.output_kind
            if i in needed:
                got = self.cache.get(key)
                if got is None:
                    return None
                path = got[0]
            else:
                path = self.cache.entry(key) / "model"
            handle = ModelHandle(kind=kind, path=path, key=key, base=previous if kind == "adapter" else None)
            handles.append(handle)
            previous = handle
        return handles

    def _run_pass(self, step: Step, params: Any, key: str, parent: ModelHandle,
                  report_intermediate: Callable[[int, float], None] | None, deadline: float | None = None,
                  base: str | None = None) -> tuple[ModelHandle, bool]:
        """The pass's output (built here, or by another worker that claimed it first) and whether it ran here."""
        for _ in range(3):  # another worker's copy may prove corrupt on download: then claim and build it here
            with self.cache.claim(key, deadline=deadline) as build_here:
                if build_here:
                    self._build(step, params, key, parent, report_intermediate, deadline, base)
            got = self.cache.get(key)
            if got is not None:
                kind = step.pass_cls.output_kind
                return ModelHandle(kind=kind, path=got[0], key=key, base=parent if kind == "adapter" else None), build_here
        raise RuntimeError(f"cache entry {key} vanished after writing")  # pragma: no cover

    def _build(self, step: Step, params: Any, key: str, parent: ModelHandle,
               report_intermediate: Callable[[int, float], None] | None, deadline: float | None, base: str | None = None) -> None:
        work = self.cache.tmp / f"work-{os.getpid()}.{uuid.uuid4().hex[:12]}"
        self.cache.tmp.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True)
        ctx = PassContext(
            provider=self.config.engine.provider,
            work_dir=work,
            data=self.data(step.data_name) if step.data_name and step.pass_cls().reads_data(params) else None,
            trust_remote_code=self.config.for_base(base).input_model.trust_remote_code,
            report_intermediate=report_intermediate,
            progress=self.observer.training_step,
            origin=step.origin,
            device=self.device if step.pass_cls.device_in_key else "cpu",
            **self._run_fields.get(key, {}),
            deadline=deadline,
        )
        info = {"pass": step.pass_cls.type_name, "name": step.name, "params": params.resolved(),
                "parent": parent.key, "kind": step.pass_cls.output_kind, **({"base": base} if base is not None else {})}
        try:
            with self.cache.put(key, info) as output:
                step.pass_cls().run(parent, params, ctx, output)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(str(self.cache.root), f"no space left on the device while pass {step.name} wrote its output; "
                                    "free space or set engine.cache_max_gb, then run the same command again to resume") from None
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            release_memory()
        if self.config.engine.cache_max_gb:
            self.cache.evict(int(self.config.engine.cache_max_gb * 1e9))
