"""What a compiled object file says about its linking, read with binutils' ``readelf`` (any
architecture: the image's arm64 modules too): the shared libraries it needs at run time and the
symbols it defines itself. Used by the tests that check ``_aec`` carries its own speexdsp.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _readelf(option: str, path: Path) -> list[str]:
    return subprocess.run(["readelf", "-W", option, str(path)], capture_output=True, text=True,
                          check=True, timeout=60).stdout.splitlines()


def needed(path: Path) -> list[str]:
    """The DT_NEEDED entries of ``path``: the libraries the loader maps with it."""
    return [ln.rsplit("[", 1)[-1].rstrip("]") for ln in _readelf("-d", path) if "(NEEDED)" in ln]


def defined(path: Path, prefix: str) -> dict[str, str]:
    """{symbol: binding (LOCAL, GLOBAL, WEAK)} of the functions and objects whose names start
    with ``prefix`` that ``path`` defines itself (not the undefined ones it imports)."""
    out: dict[str, str] = {}
    for ln in _readelf("-s", path):
        f = ln.split()
        if len(f) >= 8 and f[7].startswith(prefix) and f[6] != "UND":
            out[f[7].split("@", 1)[0]] = f[4]
    return out
