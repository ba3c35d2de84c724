"""Build hook: compiles the Cython real-time core when its source is present."""

from pathlib import Path

from setuptools import setup

ext_modules = []
if Path("firmware/_rtpcore.pyx").exists():
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension("firmware._rtpcore", ["firmware/_rtpcore.pyx"], extra_compile_args=["-O2"])],
        language_level=3,
    )

setup(ext_modules=ext_modules)
