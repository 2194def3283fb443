"""mkdocs hook (``hooks:`` in mkdocs.yml): each page's ``<!-- autotune:... -->`` markers become the reference tables
that ``docs/hooks/reference.py`` builds from the code. An unknown marker fails the build."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

_NAME = "autotune_docs_reference"


def _reference() -> Any:
    """``docs/hooks/reference.py``, loaded by path under a name of its own (no ``reference`` on sys.path)."""
    if _NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name("reference.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        spec.loader.exec_module(module)
    return sys.modules[_NAME]


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    try:
        return _reference().expand(markdown)
    except KeyError as exc:
        raise PluginError(f"docs/{page.file.src_path}: {exc.args[0]}") from None
