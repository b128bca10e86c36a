"""Run the fuzz targets: seed their corpora, build the C target under the sanitizers, fuzz
each for a while, measure the line coverage its corpus reaches, and keep the record.

    .venv/bin/python fuzz/run.py                 # every target, FUZZ_SECONDS each (make fuzz)
    .venv/bin/python fuzz/run.py dns quic        # some of them
    .venv/bin/python fuzz/run.py --smoke         # each briefly, nothing recorded (make fuzz-smoke)
    .venv/bin/python fuzz/run.py --seeds-only    # write the seed corpora and stop

A full run appends one line per target to ``fuzz/results.jsonl`` and rewrites the run
section of ``fuzz/README.md`` from all the lines: executions add up over runs. A crash,
hang, leak or sanitizer report leaves its input in ``fuzz/findings/<target>/`` and makes
the run exit 1; once fixed, the input belongs in ``fuzz/regressions/<target>/``, which
pytest replays (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORE = ROOT / "detector" / "skim_c"
BUILD = FUZZ / "build"
RESULTS = FUZZ / "results.jsonl"
README = FUZZ / "README.md"
TABLE_START, TABLE_END = "<!-- run table: written by fuzz/run.py -->", "<!-- end of run table -->"
SANITIZE = ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all"]
#: The project modules whose line coverage each target's corpus is measured on.
COVERED = {
    "binding": ["detector/extract/binding.py", "detector/devices.py"],
    "clienthello": ["detector/extract/clienthello.py"],
    "decode": ["detector/decode.py"],
    "dns": ["detector/extract/dns.py"],
    "http": ["detector/extract/http.py"],
    "identity_files": ["detector/inventory.py", "detector/leases.py"],
    "pcapfile": ["detector/sources/pcapfile.py"],
    "policy": ["detector/policy.py"],
    "proxy": ["detector/extract/proxy.py"],
    "quic": ["detector/extract/quic.py"],
    "signatures": ["detector/match.py"],
    "sigformats": ["detector/sigformats/__init__.py", "detector/sigformats/common.py", "detector/sigformats/hosts.py",
                   "detector/sigformats/adblock.py", "detector/sigformats/rpz.py", "detector/sigformats/v2fly.py",
                   "detector/sigformats/zeek.py", "detector/sigformats/suricata.py"],
    "skim": ["detector/skim_c/triage.c", "detector/skim_c/names.c", "detector/skim_c/walk.c"],
    "tcpflight": ["detector/extract/tcpflight.py"],
    "tunnels": ["detector/extract/tunnels.py"],
}
#: Input size bound per target (libFuzzer's -max_len): captures need room, names do not.
MAX_LEN = {"pcapfile": 4096, "skim": 4104, "policy": 8192, "signatures": 2048, "sigformats": 4096,
           "identity_files": 8192}
SMOKE_SECONDS = 10


@dataclass
class Run:
    target: str
    date: str
    seconds: int
    executions: int
    exec_per_second: int
    features: int
    line_coverage: float | None
    crashes: int
    command: str


def targets() -> list[str]:
    return sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.*") if p.suffix in (".py", ".c"))


def is_native(target: str) -> bool:
    return (FUZZ / f"fuzz_{target}.c").exists()


def corpus_dir(target: str) -> Path:
    return FUZZ / "corpus" / target


def write_seeds(target: str) -> int:
    """Fill the target's corpus from its seeds (once: a grown corpus is kept)."""
    directory = corpus_dir(target)
    if directory.is_dir() and any(directory.iterdir()):
        return sum(1 for _ in directory.iterdir())
    directory.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(FUZZ))
    import seeds

    inputs = seeds.skim_inputs() if is_native(target) else importlib.import_module(f"fuzz_{target}").seeds()
    kept = seeds.unique(inputs)
    for data in kept:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(kept)


def build_native(target: str, *flags: str, suffix: str = "") -> Path:
    """Compile a C target with libFuzzer and the sanitizers (clang from Debian)."""
    BUILD.mkdir(exist_ok=True)
    binary = BUILD / f"fuzz_{target}{suffix}"
    sources = [FUZZ / f"fuzz_{target}.c", *CORE.glob("*.[ch]")]
    if binary.exists() and all(binary.stat().st_mtime > s.stat().st_mtime for s in sources) and not flags:
        return binary
    # Built aside and renamed into place: a build racing another, or a fuzzer running the
    # old binary, never sees half a file.
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    subprocess.run(
        ["clang", "-g", "-O1", *SANITIZE, "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
         f"-I{CORE}", *flags, str(FUZZ / f"fuzz_{target}.c"), "-o", str(partial)],
        check=True,
    )
    partial.replace(binary)
    return binary


def command(target: str, seconds: int, corpora: list[Path], findings: Path) -> list[str]:
    """The fuzzer's command line, run from the checkout's top (paths relative to it)."""
    def rel(path: Path) -> str:
        return os.path.relpath(path, ROOT)

    head = [rel(build_native(target))] if is_native(target) else [sys.executable, rel(FUZZ / f"fuzz_{target}.py")]
    options = [f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1",
               f"-artifact_prefix={rel(findings)}/", f"-max_len={MAX_LEN.get(target, 4096)}"]
    dictionary = FUZZ / "dicts" / f"{target}.dict"
    if dictionary.exists():
        options.append(f"-dict={rel(dictionary)}")
    return [*head, *options, *(rel(c) if c.is_relative_to(ROOT) else str(c) for c in corpora)]


def fuzz(target: str, seconds: int, corpora: list[Path]) -> tuple[Run, str]:
    """Fuzz one target; new inputs go into the first of ``corpora``."""
    findings = FUZZ / "findings" / target
    findings.mkdir(parents=True, exist_ok=True)
    before = set(findings.iterdir())
    argv = command(target, seconds, corpora, findings)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz-scratch-", dir=shm) as scratch:
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", cwd=ROOT,
                                  timeout=seconds + 600, env={**os.environ, "FUZZ_SCRATCH": scratch})
        log, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:  # the fuzzer itself hung: a finding like any other
        output = b"".join(o if isinstance(o, bytes) else (o or "").encode() for o in (exc.stdout, exc.stderr))
        log = output.decode(errors="replace") + f"\nfuzz/run.py: the fuzzer did not stop {seconds + 600} s in"
        returncode = -1
    stat = dict(re.findall(r"^stat::(\w+):\s+(\d+)", log, re.M))
    features = [int(f) for f in re.findall(r"\bft: (\d+)", log)]
    crashes = len(set(findings.iterdir()) - before) or int(returncode != 0)
    shown = " ".join([".venv/bin/python" if argv[0] == sys.executable else argv[0], *argv[1:]])
    run = Run(target, datetime.date.today().isoformat(), seconds, int(stat.get("number_of_executed_units", 0)),
              int(stat.get("average_exec_per_sec", 0)), max(features, default=0), None, crashes,
              shown)
    return run, log


def line_coverage(target: str) -> float | None:
    """Percent of the lines of the target's modules that its corpus runs."""
    files = [ROOT / f for f in COVERED.get(target, [])]
    if not files:
        return None
    corpus = corpus_dir(target)
    if is_native(target):
        return _native_coverage(target, files, corpus)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / ".coverage"
        include = ",".join(str(f) for f in files)
        subprocess.run([sys.executable, "-m", "coverage", "run", f"--data-file={data}", f"--include={include}",
                        str(FUZZ / "run.py"), "--replay", target, str(corpus)], check=True, cwd=ROOT)
        report = subprocess.run([sys.executable, "-m", "coverage", "report", f"--data-file={data}",
                                 "--format=total", "--precision=1"], capture_output=True, text=True, check=True)
        return float(report.stdout.strip())


def _native_coverage(target: str, files: list[Path], corpus: Path) -> float:
    binary = build_native(target, "-fprofile-instr-generate", "-fcoverage-mapping", suffix="_coverage")
    with tempfile.TemporaryDirectory() as tmp:
        raw, merged = Path(tmp) / "run.profraw", Path(tmp) / "run.profdata"
        subprocess.run([str(binary), "-runs=0", str(corpus)], env={**os.environ, "LLVM_PROFILE_FILE": str(raw)},
                       capture_output=True, check=True)
        subprocess.run(["llvm-profdata", "merge", "-sparse", str(raw), "-o", str(merged)], check=True)
        report = subprocess.run(["llvm-cov", "export", "-summary-only", f"-instr-profile={merged}", str(binary),
                                 *map(str, files)], capture_output=True, text=True, check=True)
    lines = json.loads(report.stdout)["data"][0]["totals"]["lines"]
    return round(100.0 * lines["covered"] / lines["count"], 1)


def replay(target: str, paths: list[str]) -> int:
    """Run each input once through a Python target, without the fuzzer (coverage, pytest)."""
    import detector.decode  # noqa: F401 - imported before the target, so it is not instrumented
    import detector.extract.binding  # noqa: F401
    import detector.extract.clienthello  # noqa: F401
    import detector.extract.dns  # noqa: F401
    import detector.extract.http  # noqa: F401
    import detector.extract.quic  # noqa: F401
    import detector.extract.tcpflight  # noqa: F401
    import detector.match  # noqa: F401
    import detector.policy  # noqa: F401
    import detector.sources.pcapfile  # noqa: F401

    sys.path.insert(0, str(FUZZ))
    module = importlib.import_module(f"fuzz_{target}")
    files = [f for p in map(Path, paths) for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
    for file in files:
        module.TestOneInput(file.read_bytes())
    return len(files)


def record(runs: list[Run]) -> None:
    with RESULTS.open("a") as out:
        for run in runs:
            out.write(json.dumps(asdict(run)) + "\n")
    all_runs = [Run(**json.loads(line)) for line in RESULTS.read_text().splitlines() if line.strip()]
    latest: dict[str, Run] = {}
    total: dict[str, int] = {}
    for run in all_runs:
        latest[run.target] = run
        total[run.target] = total.get(run.target, 0) + run.executions
    rows = ["| target | executions (all runs) | exec/s (last run) | features | line coverage | crashes (last run) |",
            "|---|--:|--:|--:|--:|--:|"]
    for name in sorted(latest):
        run = latest[name]
        cov = "-" if run.line_coverage is None else f"{run.line_coverage:.1f} %"
        rows.append(f"| {name} | {total[name]:,} | {run.exec_per_second:,} | {run.features:,} | {cov} | {run.crashes} |")
    commands = [f"- `{latest[name].command}` ({latest[name].date}, {latest[name].seconds} s)" for name in sorted(latest)]
    table = "\n".join([TABLE_START, *rows, "", "The last run of each target:", "", *commands, TABLE_END])
    text = README.read_text()
    start, end = text.index(TABLE_START), text.index(TABLE_END) + len(TABLE_END)
    README.write_text(text[:start] + table + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 300)))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("FUZZ_JOBS", 2)))
    parser.add_argument("--smoke", action="store_true", help=f"each target {SMOKE_SECONDS} s, nothing recorded")
    parser.add_argument("--seeds-only", action="store_true", help="write the seed corpora and stop")
    parser.add_argument("--replay", metavar="TARGET", help="run the inputs in the paths through TARGET once")
    args, rest = parser.parse_known_args()
    if args.replay:
        print(f"{replay(args.replay, args.targets + rest)} input(s) replayed through {args.replay}")
        return 0
    chosen = args.targets or targets()
    unknown = sorted(set(chosen) - set(targets()))
    if unknown:
        parser.error(f"no such target: {', '.join(unknown)} (there are: {', '.join(targets())})")
    if not args.smoke and not args.seeds_only and not shutil.which("clang"):
        parser.error("clang is needed for the C target: apt-get install clang libclang-rt-14-dev llvm")
    for target in chosen:
        print(f"{target}: {write_seeds(target)} input(s) in {os.path.relpath(corpus_dir(target), ROOT)}", flush=True)
    if args.seeds_only:
        return 0
    seconds = SMOKE_SECONDS if args.smoke else args.seconds
    for target in chosen:
        if is_native(target):
            build_native(target)

    def one(target: str) -> tuple[Run, str]:
        if not args.smoke:
            return fuzz(target, seconds, [corpus_dir(target)])
        # A smoke run reads the kept corpus but writes what it finds to a scratch one.
        with tempfile.TemporaryDirectory() as scratch:
            return fuzz(target, seconds, [Path(scratch), corpus_dir(target)])

    runs = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for run, log in pool.map(one, chosen):
            if run.crashes or not run.executions:
                sys.stdout.write(log[-6000:])
            if not args.smoke:
                run.line_coverage = line_coverage(run.target)
            cov = "" if run.line_coverage is None else f", {run.line_coverage:.1f} % of lines"
            print(f"{run.target}: {run.executions:,} executions, {run.exec_per_second:,}/s, "
                  f"{run.features:,} features{cov}, {run.crashes} crash(es)", flush=True)
            runs.append(run)
    if not args.smoke:
        record(runs)
    failed = [run.target for run in runs if run.crashes or not run.executions]
    if failed:
        print(f"findings in {', '.join(failed)}: see fuzz/findings/", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
