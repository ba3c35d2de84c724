"""Build hook: compiles the Cython real-time core and ships the board profiles (hw/profiles) as
package data (firmware/profiles), so that ``pip install .`` gives a working ``intercom``."""

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

    ext_modules = cythonize(
        [Extension("firmware._rtpcore", ["firmware/_rtpcore.pyx"], extra_compile_args=["-O2"])],
        language_level=3,
    )

setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithProfiles})
