"""Build hook: compiles the Cython real-time core and ships the board profiles (hw/profiles) as
package data (firmware/profiles), so that ``pip install .`` gives a working ``intercom``.

Four extensions: the core (``_rtpcore``), its loss concealer (``_plc``), the packet-transform
hook it calls (``_transform``) and the SRTP transform on libsrtp2 (``_srtp``; Debian ``libsrtp2-dev`` to build,
``libsrtp2-1`` to run).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithProfiles(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "firmware" / "profiles"
        target.mkdir(parents=True, exist_ok=True)
        for profile in sorted((HERE / "hw" / "profiles").glob("*.yaml")):
            shutil.copy(profile, target / profile.name)


ext_modules = []
if (HERE / "firmware" / "_rtpcore.pyx").exists():
    from Cython.Build import cythonize
    from setuptools import Extension

    flags = ["-O2"]
    ext_modules = cythonize(
        [Extension("firmware._plc", ["firmware/_plc.pyx"], extra_compile_args=flags),
         Extension("firmware._transform", ["firmware/_transform.pyx"], extra_compile_args=flags),
         Extension("firmware._rtpcore", ["firmware/_rtpcore.pyx"], extra_compile_args=flags),
         Extension("firmware._srtp", ["firmware/_srtp.pyx"], extra_compile_args=flags,
                   libraries=["srtp2"])],
        language_level=3,
    )

setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithProfiles})
