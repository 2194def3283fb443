"""Test-only passes that inject faults into a real pipeline, in one module so that they are registered
once: pytest imports a test file by its own name, and ``from tests.search... import`` would import
it a second time and register the pass again (which the registry refuses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotune.passes.base import Pass, PassParams, register_pass


class FaultParams(PassParams):
    fail: bool = False


@register_pass()
class FaultInjection(Pass):
    """Test-only pass: raises when told to (a fault injected into a real pipeline)."""

    type_name = "FaultInjection"
    Params = FaultParams
    accepts = ("hf",)
    output_kind = "hf"

    def run(self, model: Any, params: Any, ctx: Any, output: Path) -> None:
        if params.fail:
            raise RuntimeError("injected fault")
        import shutil

        shutil.copytree(model.path, output, dirs_exist_ok=True)


FaultParams.model_fields["fail"].json_schema_extra = {"searchable": True, "default_space": [False, True]}
FaultParams.model_rebuild(force=True)
