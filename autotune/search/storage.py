"""Opening Optuna storages and studies: URLs, names, and redaction of secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autotune.errors import ConfigError
from autotune.urls import redact_url  # re-exported: the storage URL is what it redacts most
from autotune.warning_filters import ignored_warning

__all__ = ["default_storage", "load_study", "open_storage", "redact_url", "safe_name"]


def safe_name(text: str) -> str:
    """A study/file name with no path tricks: letters, digits, '-', '_' and '.' only, no leading dots."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-") or "study"
    return name[:100]


def default_storage(output_dir: Path) -> str:
    output_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(output_dir / 'study.db').resolve()}"


def _user_error(exc: BaseException) -> str | None:
    """The one-line reason when opening failed through the user's URL or setup, else None (a bug)."""
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency of optuna
        return None
    if isinstance(exc, ModuleNotFoundError):
        extra = " (install autotune[postgres])" if "psycopg" in str(exc) else ""
        return f"the storage's database driver is not installed: {exc}{extra}"
    if isinstance(exc, (sa_exc.ArgumentError, sa_exc.OperationalError, sa_exc.NoSuchModuleError, sa_exc.InterfaceError)):
        return str(exc).splitlines()[0][:200]
    return None


def open_storage(url: str, *, heartbeat_seconds: float = 20) -> Any:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if "://" not in url:
        raise ConfigError("engine.storage", f"expected a storage URL such as sqlite:///study.db, got \"{redact_url(url)}\"")
    def connect() -> Any:
        with ignored_warning(optuna.exceptions.ExperimentalWarning):  # the heartbeat options: autotune's choice
            return RDBStorage(
                url,
                heartbeat_interval=max(1, round(heartbeat_seconds)),
                grace_period=max(2, round(3 * heartbeat_seconds)),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                # SQLite: several workers on one host wait for the write lock instead of failing.
                engine_kwargs={"pool_pre_ping": True, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {})},
            )

    try:
        try:
            storage = connect()
        except Exception as exc:
            # Two workers creating a new database's tables at once: the second's CREATE fails with
            # "already exists"; the tables are there now, so connecting again succeeds.
            if "already exists" not in str(exc):
                raise
            import time

            time.sleep(0.5)
            storage = connect()
    except Exception as exc:
        cause = exc.__cause__ or exc
        reason = _user_error(exc) or _user_error(cause)
        if reason is None:
            raise  # not the user's URL: a library failure keeps its type and traceback
        raise ConfigError("engine.storage", f"cannot open {redact_url(url)}: {_without_password(reason, url)}") from None
    if url.startswith("sqlite"):
        _serialize_sqlite(storage.engine)
    return storage


def _serialize_sqlite(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Python's sqlite3 driver opens a transaction only at the first write, so Optuna's pop of a queued
    trial (read WAITING, then write RUNNING) is two steps another process can interleave: two workers
    on one host then both run the same trial. Serialized transactions make the pop atomic (PostgreSQL
    locks the row itself). This is SQLAlchemy's documented recipe for pysqlite transactions.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, begins transactions

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna created the tables predate the hooks


def _without_password(text: str, url: str) -> str:
    userinfo = url.partition("://")[2].rpartition("@")[0]
    password = userinfo.split(":", 1)[1] if ":" in userinfo else ""
    return text.replace(password, "***") if password else text


def load_study(storage_url: str, study_name: str | None = None) -> Any:
    import optuna

    storage = open_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
    if study_name is None:
        if len(names) != 1:
            raise ConfigError("--study", f"name the study (storage {redact_url(storage_url)} holds: {names or 'none'})")
        study_name = names[0]
    if study_name not in names:
        raise ConfigError("--study", f"no study '{study_name}' in {redact_url(storage_url)} (holds: {names or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)
