"""The fuzz targets (fuzz/): every past finding replayed, each target run briefly under its
sanitizers, and proof that the sanitizer build would catch a read past a buffer."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
_spec = importlib.util.spec_from_file_location("fuzz_run", FUZZ / "run.py")
run = sys.modules["fuzz_run"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

needs_clang = pytest.mark.skipif(shutil.which("clang") is None, reason="clang (Debian's clang, libclang-rt-14-dev) is not installed")


def regressions() -> list[tuple[str, Path]]:
    root = FUZZ / "regressions"
    return sorted((d.name, f) for d in root.iterdir() if d.is_dir() for f in d.iterdir()) if root.is_dir() else []


@pytest.mark.parametrize(("target", "path"), regressions(), ids=lambda v: v if isinstance(v, str) else v.name)
def test_past_finding_stays_fixed(target: str, path: Path) -> None:
    assert target in run.targets(), f"fuzz/regressions/{target} has no target fuzz/fuzz_{target}.*"
    if run.is_native(target):
        if shutil.which("clang") is None:
            pytest.skip("clang is not installed")
        proc = subprocess.run([str(run.build_native(target)), str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert run.replay(target, [str(path)]) == 1


def test_every_target_is_known_to_the_runner() -> None:
    """A target without a module to measure, or a module list naming a missing file, is a mistake."""
    assert set(run.targets()) == set(run.COVERED)
    for files in run.COVERED.values():
        for file in files:
            assert (run.ROOT / file).is_file(), file


@needs_clang
@pytest.mark.parametrize("target", run.targets())
def test_smoke(target: str) -> None:
    """Each target a few seconds from its seeds: no finding, and it really executes inputs."""
    proc = subprocess.run([sys.executable, str(FUZZ / "run.py"), "--smoke", target], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{target}: 0 executions" not in proc.stdout
    assert "0 crash(es)" in proc.stdout


@needs_clang
def test_sanitizer_build_catches_a_planted_overread(tmp_path: Path) -> None:
    """Built with FUZZ_PLANTED_OVERREAD, the target tells the walk its buffer is one byte
    longer than it is; one raw-IP record of one byte then makes the triage read that byte.
    AddressSanitizer must stop it there, in the core's code, and the normal build must not:
    so the smoke runs cannot pass by instrumenting nothing."""
    setup = bytes((0, 0, 3, 3, 3, 3, 63, 0))  # pcap, little-endian, one worker, raw IP (LINKTYPE 101)
    record = struct.pack("<IIII", 0, 0, 1, 1)  # a record header whose one byte of frame is missing
    case = tmp_path / "planted"
    case.write_bytes(setup + record)
    planted = run.build_native("skim", "-DFUZZ_PLANTED_OVERREAD", suffix="_planted")
    proc = subprocess.run([str(planted), str(case)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr
    assert "skim_classify" in proc.stderr and "triage.c" in proc.stderr
    clean = subprocess.run([str(run.build_native("skim")), str(case)], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-2000:]
