"""The one compiled part, the skim (detector/_skim.c): the record walk and the byte checks
that drop the bulk before Python, and the data an installed copy carries. Everything else
is declared in pyproject.toml; setup.py is setuptools' stable way to declare a C extension
and to map directories outside the package into it.

The signatures (``signatures/``) and the example policy (``examples/``) stay at the top of
the repository, where operators and reviewers look for them; a wheel carries them inside
the package as ``detector/signatures`` and ``detector/examples``, so an installed copy
finds its signatures without a checkout (``detector.cli.DEFAULT_SIGNATURES``)."""

from setuptools import Extension, find_namespace_packages, setup

#: Directories of the repository that are installed inside the package, and their files.
DATA = {
    "detector.signatures": ("signatures", ["*.toml", "README.md"]),
    "detector.examples": ("examples", ["*.toml"]),
}

setup(
    packages=[*find_namespace_packages(include=["detector", "detector.*"], exclude=["*.__pycache__"]), *DATA],
    package_dir={package: directory for package, (directory, _) in DATA.items()},
    package_data={package: files for package, (_, files) in DATA.items()},
    ext_modules=[
        Extension(
            "detector._skim",
            ["detector/_skim.c", "detector/skim_c/triage.c", "detector/skim_c/names.c", "detector/skim_c/walk.c"],
            depends=["detector/skim_c/skim.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ]
)
