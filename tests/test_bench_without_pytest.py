"""The benchmarks run without pytest or the test tree: the tiny model they share with the tests is
built by ``autotune.testing``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

# Imports every bench script as a module (their work is under ``__main__``) and builds the tiny model
# as bench/common.py does, while importing pytest or anything from tests/ raises.
NO_PYTEST = """
import importlib, pathlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest", "tests"):
            raise ImportError(f"{name} is not installed here")
        return None
sys.meta_path.insert(0, Block())
bench, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
sys.path.insert(0, str(bench))
for script in sorted(bench.glob("*.py")):
    importlib.import_module(script.stem)
import common
common.RESULTS = out
folder = common.tiny_model()
assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file(), sorted(folder.iterdir())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest", "tests")))
"""


def test_no_bench_script_imports_pytest_or_the_test_tree() -> None:
    found = []
    for script in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{script.name}: {n}" for n in names if n.split(".")[0] in ("pytest", "_pytest", "tests")]
    assert not found


def test_the_bench_scripts_import_and_build_the_tiny_model_with_pytest_blocked(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", NO_PYTEST, str(BENCH), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
