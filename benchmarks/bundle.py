"""Update bundles of the image's own root: size and build time per squashfs compression.

The root is ``images/out/rootfs-<version>.ext4`` (the ext4 that assemble.sh writes into slot A,
and ``./build.sh bundle`` signs); without it the row says so and how to make it. Each bundle is
made by devtools/bundles.py with a throwaway key, exactly as ``./build.sh bundle`` makes its
own, then read back with ``rauc extract`` (the verity check and the decompression of every
block: the host-side share of what the box does when it installs). The download and install
time on the box, and the 20 ms loop during an install, need the QEMU image (not measured here).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools import bundles

REPO = Path(__file__).resolve().parents[1]

# (label, mksquashfs arguments): the release setting first, the tests' fast one second
SETTINGS = [(f"`{bundles.RELEASE_SQUASHFS}` (./build.sh bundle)", bundles.RELEASE_SQUASHFS),
            (f"`{bundles.FAST_SQUASHFS}` (tests)", bundles.FAST_SQUASHFS)]
MORE = [("`-comp zstd -Xcompression-level 15` (128 KiB blocks)",
         "-comp zstd -Xcompression-level 15"),
        ("`-comp gzip` (mksquashfs's default)", "-comp gzip"),
        ("`-comp xz -b 1M`", "-comp xz -b 1M")]


def image_root() -> Path:
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r'^version = "([^"]+)"', text, re.M)
    version = found.group(1) if found else "unknown"
    return REPO / "images" / "out" / f"rootfs-{version}.ext4"


def available(root: Path | None = None) -> str | None:
    """None when the benchmark can run, else one line saying why not."""
    root = root or image_root()
    if not root.is_file():
        return f"no image root {root.relative_to(REPO) if root.is_relative_to(REPO) else root} " \
               "(./build.sh image makes it)"
    for tool in ("rauc", "mksquashfs", "debugfs", "openssl"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            return f"{tool} is not installed (./build.sh bundle installs it)"
    return None


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def run(quick: bool = False, root: Path | None = None) -> dict:
    root = root or image_root()
    with tempfile.TemporaryDirectory(prefix="bench-bundle-", dir=root.parent) as tmp:
        key, cert = bundles.make_key_pair(Path(tmp) / "key", "intercom benchmark key")
        rows = []
        for label, args in SETTINGS + ([] if quick else MORE):
            out = Path(tmp) / "b.raucb"
            started = time.perf_counter()
            bundles.make_bundle(root, out, "9.9.9", key, cert, squashfs_args=args)
            built = time.perf_counter() - started
            started = time.perf_counter()
            done = subprocess.run(["rauc", "extract", f"--keyring={cert}", str(out),
                                   str(Path(tmp) / "x")], capture_output=True, text=True)
            read = time.perf_counter() - started
            if done.returncode:
                raise RuntimeError(f"rauc extract failed: {done.stderr.strip()[-200:]}")
            subprocess.run(["rm", "-rf", str(Path(tmp) / "x")], check=True)
            rows.append({"what": label, "bytes": out.stat().st_size, "build_s": built,
                         "read_s": read})
            out.unlink()
    return {"root": root, "root_bytes": root.stat().st_size, "root_used": _allocated(root),
            "rows": rows}


def table(result: dict) -> str:
    mib = 2 ** 20
    out = [f"Root: {result['root'].name}, {result['root_bytes'] / mib:.0f} MiB ext4, "
           f"{result['root_used'] / mib:.0f} MiB allocated.", "",
           "| squashfs compression | bundle MiB | of the allocated root | build s "
           "| read back s (rauc extract) |", "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        out.append(f"| {r['what']} | {r['bytes'] / mib:.1f} | "
                   f"{r['bytes'] / result['root_used']:.0%} | {r['build_s']:.1f} | "
                   f"{r['read_s']:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    given = Path(paths[0]) if paths else None
    why = available(given)
    print(table(run("--quick" in sys.argv, given)) if why is None else f"not measured: {why}")
