"""The one compiled part, the skim (detector/_skim.c): the record walk and the byte checks
that drop the bulk before Python. Everything else is declared in pyproject.toml; setup.py
is setuptools' stable way to declare a C extension."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "detector._skim",
            ["detector/_skim.c", "detector/skim_c/triage.c", "detector/skim_c/names.c", "detector/skim_c/walk.c"],
            depends=["detector/skim_c/skim.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ]
)
