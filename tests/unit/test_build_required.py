"""The ``compiled`` rule of ``tests/compiled.py`` run for real: pytest in a child process in
which every Cython extension is refused, as on a machine without the C build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import compiled

REPO = Path(__file__).resolve().parents[2]
NO_BUILD = compiled.REFUSE_BUILD + """
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""
# one module that imports the core at the top, one test marked alone, one pure test
SELECTION = ["tests/unit/test_g711_rtp.py",
             "tests/unit/test_config.py::test_check_config_cli_accepts_a_good_file",
             "tests/unit/test_config.py::test_check_config_cli_names_the_bad_key"]


def _pytest_without_build(require: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, compiled.REQUIRE: require}
    return subprocess.run([sys.executable, "-c", NO_BUILD, ",".join(compiled.extensions()),
                           "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:cov", *SELECTION],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_without_the_build_compiled_tests_are_skipped_with_the_reason() -> None:
    r = _pytest_without_build("0")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 passed, 2 skipped" in r.stdout, r.stdout[-3000:]
    assert r.stdout.count(compiled.REASON) == 2, r.stdout[-3000:]


def test_with_the_build_required_a_missing_extension_stops_the_run_naming_it() -> None:
    r = _pytest_without_build("1")
    assert r.returncode == 4, r.stdout[-3000:] + r.stderr[-2000:]  # pytest's usage error
    out = r.stdout + r.stderr
    assert "INTERCOM_REQUIRE_BUILD is set" in out and "firmware._rtpcore:" in out, out[-3000:]
    assert "passed" not in out and "skipped" not in out, "no test ran"
