"""The docs site (docs/, mkdocs.yml): its generated reference tables hold every registered pass and metric type, every
marker a page writes is one the hook knows, every page is in the nav, and ``mkdocs build --strict`` passes (a broken
link or anchor, or a page missing from the nav, fails it).

The build needs the ``docs`` extra (mkdocs, mkdocs-material); without it the build test skips, and under CI=true
(``.ci/run`` installs the extra) it fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def _reference() -> ModuleType:
    """docs/hooks/reference.py, loaded by path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("autotune_docs_reference_test", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _reference()


def _mkdocs_config() -> dict:
    """mkdocs.yml (its ``!!python/name`` tags, if any, read as plain strings)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)


def _nav_pages(nav: list) -> list[str]:
    found: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            found += _nav_pages(value)
        elif isinstance(value, str) and not re.match(r"\w+://", value):
            found.append(value)
    return found


def _type_names(table: str) -> set[str]:
    """The names in a generated table's first column."""
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.M))


def test_every_registered_pass_type_and_its_aliases_are_in_the_passes_table() -> None:
    registry = reference.pass_registry()
    table = reference.passes_table()
    types = {cls.type_name for _, cls in registry.items()}
    assert types and _type_names(table) == types
    for name, cls in registry.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{cls.type_name}` |"))
        assert f"`{name}`" in row
        assert f"`{cls.__module__}.{cls.__name__}`" in reference.pass_table(cls.type_name)


def test_every_registered_metric_type_and_its_aliases_are_in_the_metrics_table() -> None:
    registry = reference.metric_registry()
    table = reference.metrics_table()
    types = {cls.type_name for _, cls in registry.items()}
    assert types and _type_names(table) == types
    for name, cls in registry.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{cls.type_name}` |"))
        assert f"`{name}`" in row
        for sub in cls.SUB_TYPES:
            assert f"`{sub}`" in row


def test_each_pass_table_lists_every_parameter_with_its_default_space() -> None:
    for _, cls in reference.pass_registry().items():
        table = reference.pass_table(cls.type_name)
        rows = {m.group(1): line for line in table.splitlines() if (m := re.match(r"^\| `([\w.\[\]]+)` \|", line))}
        assert set(cls.Params.model_fields) <= set(rows), cls.type_name
        for field, space in cls.Params.searchable_fields().items():
            assert f"`{reference._value(space)}`" in rows[field], (cls.type_name, field)


def test_each_metric_table_lists_every_sub_type_and_user_config_key() -> None:
    for _, cls in reference.metric_registry().items():
        table = reference.metric_table(cls.type_name)
        for sub, info in cls.SUB_TYPES.items():
            row = next(line for line in table.splitlines() if line.startswith(f"| `{sub}` |"))
            assert f"`{info.kind}`" in row and ("yes" if info.higher_is_better else "no") in row
        for key in cls.Params.model_fields:
            assert re.search(rf"^\| `{key}` \|", table, re.M), (cls.type_name, key)


def test_every_pass_and_metric_type_has_its_own_generated_table_in_the_docs() -> None:
    used = {(name, arg) for page in PAGES for name, arg in reference.markers((DOCS / page).read_text(encoding="utf-8"))}
    for page, kind, registry in (("passes.md", "pass", reference.pass_registry()),
                                 ("metrics.md", "metric", reference.metric_registry())):
        in_page = set(reference.markers((DOCS / page).read_text(encoding="utf-8")))
        # autotune's own types (a test module may have registered a fault-injecting pass in this process)
        for type_name in sorted({cls.type_name for _, cls in registry.items() if cls.__module__.startswith("autotune.")}):
            assert (kind, type_name) in in_page, f"docs/{page} has no section with the '<!-- autotune:{kind} {type_name} -->' table"
    assert used


def test_every_marker_in_the_docs_is_one_the_hook_knows() -> None:
    found = 0
    for page in PAGES:
        for name, arg in reference.markers((DOCS / page).read_text(encoding="utf-8")):
            reference.check_marker(name, arg)  # KeyError for an unknown one
            found += 1
    assert found >= 4


def test_an_unknown_marker_is_refused_not_left_in_the_page() -> None:
    for bad in ("<!-- autotune:pases -->", "<!-- autotune:pass NoSuchPass -->", "<!-- autotune:pass -->",
                "<!-- autotune:metrics extra -->", "<!-- autotune:pass LoRA QLoRA -->", "<!-- autotune:include ../x.md -->"):
        with pytest.raises(KeyError):
            reference.expand(f"text\n\n{bad}\n")
    assert "<!--" not in reference.expand("a\n\n<!-- autotune:passes -->\n\nb")


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    config = _mkdocs_config()
    nav = _nav_pages(config["nav"])
    assert sorted(nav) == PAGES
    assert len(nav) == len(set(nav))
    assert config["hooks"] == ["docs/hooks/autotune_hook.py"]


def test_the_readme_links_resolve_to_docs_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert links
    for link in links:
        assert (ROOT / link).is_file(), link
    assert {f"docs/{p}" for p in PAGES} <= set(links)


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        skip_or_fail_in_ci('mkdocs or mkdocs-material is not installed (pip install -e ".[docs]")')
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    passes = (tmp_path / "site" / "passes" / "index.html").read_text(encoding="utf-8")
    assert "autotune:pass" not in passes and "<code>target_modules</code>" in passes
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()
    assert not (tmp_path / "site" / "hooks").exists()
