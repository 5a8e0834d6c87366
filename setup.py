"""The one thing pyproject.toml cannot say: the optional native fingerprint module.

``sync_pipelines/_sp1.c`` hashes the ``sp1`` fingerprint texts with OpenSSL's SHA-256. It is
optional: where it cannot be compiled (no C compiler or no OpenSSL headers), the install goes on
and :mod:`sync_pipelines.diff` uses its pure-Python path, which gives the same digests.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sync_pipelines._sp1",
            sources=["sync_pipelines/_sp1.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
            optional=True,
        )
    ]
)
