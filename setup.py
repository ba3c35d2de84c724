"""Build hook: compiles the Cython real-time core when its source is present.

Three extensions: the core (``_rtpcore``), the packet-transform hook it calls (``_transform``)
and the SRTP transform on libsrtp2 (``_srtp``; Debian ``libsrtp2-dev`` to build,
``libsrtp2-1`` to run).
"""

from pathlib import Path

from setuptools import setup

ext_modules = []
if Path("firmware/_rtpcore.pyx").exists():
    from Cython.Build import cythonize
    from setuptools import Extension

    flags = ["-O2"]
    ext_modules = cythonize(
        [Extension("firmware._transform", ["firmware/_transform.pyx"], extra_compile_args=flags),
         Extension("firmware._rtpcore", ["firmware/_rtpcore.pyx"], extra_compile_args=flags),
         Extension("firmware._srtp", ["firmware/_srtp.pyx"], extra_compile_args=flags,
                   libraries=["srtp2"])],
        language_level=3,
    )

setup(ext_modules=ext_modules)
