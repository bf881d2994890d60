"""Run the fuzz targets, each for a bounded time: ``python -m tests.fuzz.run --seconds 60``.

Each target runs under atheris (libFuzzer, coverage-guided) in a process of its own, starting
from its committed seed corpus in ``tests/fuzz/corpus/<target>/``. New interesting inputs go
to a scratch directory, never into the committed corpus. A crash stops that target; its input
is saved as ``<workdir>/crash-<target>-...`` and the run fails. Add that file to the target's
corpus directory: ``tests/fuzz/test_corpus.py`` then replays it in every test run.

Where atheris cannot be installed (it ships wheels for Linux only), the same targets run under
a simple mutation fuzzer seeded with the corpus: not coverage-guided, but the same checks.

``make fuzz FUZZ_SECONDS=...`` runs this; CI runs it with 10 seconds per target.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGETS = ("tokens", "jwt", "origin", "format")
CORPUS = HERE / "corpus"


def seeds(target: str) -> list[bytes]:
    """The committed corpus of ``target``, in a stable order."""
    return [path.read_bytes() for path in sorted((CORPUS / target).iterdir()) if path.is_file()]


def run_atheris(target: str, seconds: int, workdir: Path) -> bool:
    scratch = workdir / f"{target}-corpus"
    scratch.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        f"tests.fuzz.fuzz_{target}",
        f"-max_total_time={seconds}",
        f"-artifact_prefix={workdir}/crash-{target}-",
        "-timeout=20",  # seconds for one input: anything slower is a hang
        "-rss_limit_mb=4096",
        "-print_final_stats=1",
        str(scratch),  # the first directory receives new inputs
        str(CORPUS / target),
    ]
    result = subprocess.run(command, cwd=ROOT, check=False)
    return result.returncode == 0


def mutate(data: bytes, pool: list[bytes], rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.randrange(5)
        position = rng.randint(0, len(buffer))
        if choice == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            buffer[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif choice == 2 and buffer:
            del buffer[position : position + rng.randint(1, 16)]
        elif choice == 3:
            other = rng.choice(pool)
            start = rng.randint(0, len(other))
            buffer[position:position] = other[start : start + rng.randint(1, 64)]
        else:
            buffer[position:position] = rng.choice([b"\x00", b"\xff", b"\x00\x01", b'"', b"."])
    return bytes(buffer)


def run_fallback(target: str, seconds: int, workdir: Path) -> bool:
    check = importlib.import_module(f"tests.fuzz.fuzz_{target}").check
    pool = seeds(target) or [b""]
    rng = random.Random()
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        data = mutate(rng.choice(pool), pool, rng)
        try:
            check(data)
        except Exception:
            crash = workdir / f"crash-{target}-{runs}"
            crash.write_bytes(data)
            print(f"{target}: crash on input saved as {crash}", file=sys.stderr)
            raise
        runs += 1
        if runs % 64 == 0:
            pool.append(data)  # keep some variety; not coverage-guided
    print(f"{target}: {runs} inputs in {seconds} s, no crash (mutation fuzzer)")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--workdir", type=Path, help="where crashes and new inputs go")
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (all)")
    options = parser.parse_args(argv)
    unknown = set(options.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="wsgate-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    have_atheris = importlib.util.find_spec("atheris") is not None
    if not have_atheris:
        print("atheris is not installed: using the mutation fuzzer instead", file=sys.stderr)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    failed = []
    for target in options.targets or TARGETS:
        print(f"== fuzzing {target} for {options.seconds} s", flush=True)
        runner = run_atheris if have_atheris else run_fallback
        try:
            ok = runner(target, options.seconds, workdir)
        except Exception:
            ok = False
        if not ok:
            failed.append(target)
    if failed:
        print(f"crashes in {', '.join(failed)}; inputs in {workdir}", file=sys.stderr)
        return 1
    print(f"no crash in {', '.join(options.targets or TARGETS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
