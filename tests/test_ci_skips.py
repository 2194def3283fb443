"""A test whose prerequisite is missing skips locally but fails under CI=true (a broken install must not pass CI green)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

POSTGRES_TEST = "tests/search/test_workers.py::test_three_workers_on_postgres_share_a_study_without_duplicates"


def run_postgres_test(ci: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTOTUNE_TEST_POSTGRES_URL"}
    env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", POSTGRES_TEST, "-rs"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_postgres_test_without_a_server_fails_in_ci_and_skips_elsewhere(ci: str, outcome: str) -> None:
    proc = run_postgres_test(ci)
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    assert (proc.returncode == 0) == (ci != "true")
    assert "AUTOTUNE_TEST_POSTGRES_URL" in proc.stdout  # the reason names what to set
