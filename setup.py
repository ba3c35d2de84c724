"""Build hook: compiles the Cython real-time core and ships the board profiles (hw/profiles) as
package data (firmware/profiles), so that ``pip install .`` gives a working ``intercom``.

The extensions: the media stream's I/O shell ``firmware/_rtpcore.pyx`` (where the design card
puts it) and, in ``firmware/core/``, the sans-I/O core ``_mediacore`` and its units (``_g711``,
``_rtp``, ``_jitter``, ``_rtcp``, ``_dtmf``, ``_conceal`` and its G.711 Appendix I subclass
``_plc``, ``_drift``), the two hooks between core and I/O (``_transform`` between packets and
sockets, ``_processor`` around the PCM played and captured), the SRTP transform on libsrtp2
(``_srtp``; Debian ``libsrtp2-dev`` to build, ``libsrtp2-1`` to run) and the echo cancellers
(``_aec``: speexdsp, linked statically from the ``-O3`` copy build.sh builds when
``INTERCOM_SPEEXDSP`` names its prefix, else the system's, ``libspeexdsp-dev``; the WebRTC audio
processing module through a C++ shim when pkg-config finds ``webrtc-audio-processing-1`` or
``webrtc-audio-processing``, else built without it) and the sound card the loop drives itself
(``_card``: alsa-lib, ``libasound2-dev`` to build, ``libasound2`` to run).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CORE = "firmware/core"  # the compiled media core's units (firmware/_rtpcore.pyx stays above it)


class BuildPyWithProfiles(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "firmware" / "profiles"
        target.mkdir(parents=True, exist_ok=True)
        for profile in sorted((HERE / "hw" / "profiles").glob("*.yaml")):
            shutil.copy(profile, target / profile.name)


def _webrtc_flags() -> tuple[str, list[str], list[str]] | None:
    """(macro, cflags, libs) of the WebRTC audio processing module by pkg-config, or None."""
    for name, macro in (("webrtc-audio-processing-1", "WEBRTC_APM_1"),
                        ("webrtc-audio-processing", "WEBRTC_APM_03")):
        try:
            cflags = subprocess.run(["pkg-config", "--cflags", name], capture_output=True,
                                    text=True, check=True).stdout.split()
            libs = subprocess.run(["pkg-config", "--libs", name], capture_output=True,
                                  text=True, check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            continue
        cflags += ["-std=c++17"]
        # a shim that does not compile against this version must not cost the whole build
        check = subprocess.run(["c++", "-fsyntax-only", "-DHAVE_WEBRTC", f"-D{macro}", *cflags,
                                str(HERE / CORE / "_webrtc_shim.cpp")],
                               capture_output=True, text=True)
        if check.returncode != 0:
            errors = [ln for ln in check.stderr.splitlines() if "error" in ln]
            first = (errors or check.stderr.strip().splitlines() or ["c++ failed"])[0]
            print(f"setup.py: WARNING: building without WebRTC: the shim does not compile "
                  f"against {name}: {first}", file=sys.stderr)
            return None
        return macro, cflags, libs
    return None


def _speexdsp() -> dict[str, list[str]]:
    """How ``_aec`` links speexdsp: statically, the copy build.sh built (``INTERCOM_SPEEXDSP``:
    its prefix, with include/speex/ and lib/libspeexdsp.a; its symbols stay inside the module),
    or the system's libspeexdsp (a plain ``pip install .``)."""
    prefix = os.environ.get("INTERCOM_SPEEXDSP", "")
    if not prefix:
        print("setup.py: _aec links the system's libspeexdsp (INTERCOM_SPEEXDSP is not set)",
              file=sys.stderr)
        return {"libraries": ["speexdsp"]}
    archive = Path(prefix) / "lib" / "libspeexdsp.a"
    if not archive.is_file() or not (Path(prefix) / "include" / "speex" / "speex_echo.h").is_file():
        raise SystemExit(f"setup.py: INTERCOM_SPEEXDSP={prefix} has no lib/libspeexdsp.a and "
                         "include/speex/speex_echo.h (./build.sh setup builds them)")
    print(f"setup.py: _aec links speexdsp statically from {archive}", file=sys.stderr)
    return {"include_dirs": [str(Path(prefix) / "include")], "extra_objects": [str(archive)],
            "depends": [str(archive)], "libraries": ["m"],
            "extra_link_args": ["-Wl,--exclude-libs,libspeexdsp.a"]}


ext_modules = []
if (HERE / "firmware" / "_rtpcore.pyx").exists():
    from Cython.Build import cythonize
    from setuptools import Extension

    flags = ["-O2"]

    def unit(name: str, **kw: list[str]) -> Extension:
        return Extension(f"firmware.core.{name}", [f"{CORE}/{name}.pyx"], extra_compile_args=flags,
                         **kw)

    speex = _speexdsp()
    aec = unit("_aec", libraries=speex["libraries"],
               include_dirs=speex.get("include_dirs", []) + [CORE],
               extra_objects=speex.get("extra_objects", []), depends=speex.get("depends", []),
               extra_link_args=speex.get("extra_link_args", []))
    webrtc = _webrtc_flags()
    if webrtc:  # the C++ shim over whichever WebRTC module this system has (0.3 or 1.x)
        aec.sources.append(f"{CORE}/_webrtc_shim.cpp")
        aec.define_macros += [("HAVE_WEBRTC", "1"), (webrtc[0], "1")]
        aec.extra_compile_args = flags + webrtc[1]
        aec.extra_link_args += webrtc[2] + ["-lstdc++"]
    ext_modules = cythonize(
        [unit(name) for name in ("_transform", "_processor", "_g711", "_rtp", "_jitter", "_rtcp",
                                 "_dtmf", "_conceal", "_plc", "_drift", "_mediacore")] +
        [aec, unit("_srtp", libraries=["srtp2"]), unit("_card", libraries=["asound"]),
         Extension("firmware._rtpcore", ["firmware/_rtpcore.pyx"], extra_compile_args=flags)],
        language_level=3,
    )

setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithProfiles})
