"""What every reference test (tests/reference/*.py) shares.

A reference test checks CAN against the library people trust (transformers, TRL,
PEFT, safetensors, sentencepiece, scipy). It builds its inputs with that library
at test time in a temporary folder, runs CAN's programs on them (the shipped
can-* tools, or can_reference_probe: tests/reference/can_reference_probe.cpp,
which exposes the library functions the tools are made of), and compares.

Exit status: 0 pass, 1 a failure (each named), 77 skipped because a library is
missing. Under CI (the environment variable CI set) a missing library is a
failure, since .ci/run installs every one from requirements.txt.
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile

# Before any test imports torch: the models are tiny, so one thread each, here and
# in the programs the tests run (they read OMP_NUM_THREADS), is fastest; several
# threads spinning on CI's 2 shared cores (tests run in parallel) are many times
# slower. CTest sets the same; this covers a script run by hand.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SKIP = 77


def require(*modules):
    """Imports the named modules, or exits: skipped (77) outside CI, failed (1) in CI."""
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as error:
            if os.environ.get("CI"):
                print(f"FAILED: {name} is not installed, and CI installs every library ({error})")
                sys.exit(1)
            print(f"SKIPPED: {name} is not installed ({error})")
            sys.exit(SKIP)
    return loaded[0] if len(loaded) == 1 else loaded


def binary_dir():
    return os.environ.get("CAN_BINARY_DIR", "build")


def program(name):
    """Path of a built program (can-score, can_reference_probe, ...); exits 1 when it is missing."""
    path = os.path.join(binary_dir(), name)
    if not os.access(path, os.X_OK):
        print(f"FAILED: {path} is not built (CAN_BINARY_DIR={binary_dir()}); build first, then ctest -L reference")
        sys.exit(1)
    return path


def run(args, expect_status=0):
    """Runs a program; a different exit status is a CheckFailure with its stderr."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if result.returncode != expect_status:
        raise CheckFailure(
            f"{' '.join(str(a) for a in args)} exited {result.returncode} (expected {expect_status}):\n"
            f"{result.stderr.strip()[-4000:]}"
        )
    return result


def probe(subcommand, *args):
    """Runs can_reference_probe SUBCOMMAND ARGS...; returns the completed process."""
    return run([program("can_reference_probe"), subcommand, *args])


def temporary_folder(prefix):
    return tempfile.TemporaryDirectory(prefix=f"can_reference_{prefix}_")


class CheckFailure(Exception):
    pass


class Checks:
    """Collects named comparisons; report() prints them and returns the exit status."""

    def __init__(self, title):
        self.title = title
        self.failures = []
        self.count = 0

    def check(self, name, ok, detail=""):
        self.count += 1
        if not ok:
            self.failures.append(f"{name}: {detail}")
            print(f"  FAIL {name}: {detail}")
        return ok

    def close(self, name, actual, expected, atol, rtol=0.0, why=""):
        """|actual - expected| <= atol + rtol·|expected| elementwise (torch tensors or numbers)."""
        import torch

        a = torch.as_tensor(actual, dtype=torch.float64)
        e = torch.as_tensor(expected, dtype=torch.float64)
        if a.shape != e.shape:
            return self.check(name, False, f"shape {tuple(a.shape)} != {tuple(e.shape)}")
        if a.numel() == 0:
            return self.check(name, True)
        excess = (a - e).abs() - (atol + rtol * e.abs())
        worst = int(excess.flatten().argmax())
        error = float((a - e).abs().max())
        ok = bool((excess <= 0).all()) and bool(torch.isfinite(a).all())
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: max |diff| {error:.3g} (atol {atol:g}, rtol {rtol:g}{'; ' + why if why else ''})")
        self.count += 1
        if not ok:
            self.failures.append(
                f"{name}: max |diff| {error:.3g} > tolerance; worst at flat index {worst}: "
                f"{float(a.flatten()[worst])!r} vs {float(e.flatten()[worst])!r}"
            )
        return ok

    def equal(self, name, actual, expected):
        ok = actual == expected
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        self.count += 1
        if not ok:
            self.failures.append(f"{name}: {str(actual)[:300]} != {str(expected)[:300]}")
        return ok

    def report(self):
        if self.failures:
            print(f"{self.title}: {len(self.failures)} of {self.count} checks failed:")
            for failure in self.failures:
                print(f"  - {failure}")
            return 1
        print(f"{self.title}: all {self.count} checks passed")
        return 0


def write_json(path, value):
    with open(path, "w") as out:
        json.dump(value, out)


def read_json(path):
    with open(path) as source:
        return json.load(source)
