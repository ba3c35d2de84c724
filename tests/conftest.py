"""Rules for the whole test run; imports nothing compiled and starts no peer.

Owns the ``compiled`` marker (see ``tests/compiled.py``): without the C build such tests are
skipped with the reason; with ``INTERCOM_REQUIRE_BUILD=1`` a missing extension ends the run
before the first test, naming it. Fixtures that start Asterisk, baresip, Chromium or the box
live in the conftests of the folders that use them (``tests/integration``, ``tests/browser``),
so that ``pytest tests/unit`` needs none of them.
"""

from __future__ import annotations

import pytest

from . import compiled


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compiled: needs the compiled media core (skipped without the build; "
        f"a failure with {compiled.REQUIRE}=1)")
    if compiled.required() and (gone := {**compiled.missing(), **compiled.missing_extras()}):
        lines = "\n".join(f"  {name}: {why}" for name, why in gone.items())
        raise pytest.UsageError(
            f"{compiled.REQUIRE} is set but {len(gone)} module(s) the full run needs do not "
            f"import (the compiled core: python setup.py build_ext --inplace; the test "
            f"extras: pip install -e .[test]):\n{lines}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("compiled")]
    if not marked or not (gone := compiled.missing()):
        return
    skip = pytest.mark.skip(reason=f"{compiled.REASON} ({', '.join(sorted(gone))} missing)")
    for item in marked:
        item.add_marker(skip)
