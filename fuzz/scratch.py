"""A scratch file for the targets whose code under test reads a path, not bytes.

One file per process, in memory where the system has /dev/shm (on a disk, writing it took
most of each run). It is removed at exit when inputs are replayed; libFuzzer ends the
process without running exit handlers, so fuzz/run.py gives each run a folder of its own
(FUZZ_SCRATCH) and removes it afterwards.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

_files: dict[str, Path] = {}


def scratch_file(prefix: str, suffix: str) -> Path:
    """The one file of this process for ``prefix`` (made on first use)."""
    if prefix not in _files:
        where = os.environ.get("FUZZ_SCRATCH") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=where)
        os.close(fd)
        _files[prefix] = Path(name)
        atexit.register(_files[prefix].unlink, missing_ok=True)
    return _files[prefix]
