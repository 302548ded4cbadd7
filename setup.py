"""Build configuration beyond pyproject.toml: the optional C extension of the per-packet path.

``pptpkit.speedups._ext`` is ``optional``: without a C compiler or the Python headers the
install still succeeds and pptpkit runs its pure-Python twins (``pptpkit.speedups`` says so
once, when a data plane starts).  tools/bootstrap.sh installs gcc and python3-dev first.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pptpkit.speedups._ext",
            sources=["src/pptpkit/speedups/_ext.c"],
            optional=True,
            extra_compile_args=["-O3"],
        )
    ]
)
