"""Run Blender test cases (tests/blender_cases.py) each in its own process, on several Blender versions.

Blender keeps global state and can hang at exit with classes still registered, so every Blender test
runs one case in a fresh Python process with a timeout. The Blender Pythons are this test environment's
own (sys.executable, which has bpy) plus those listed in THUNDER_BLENDER_PYTHONS (os.pathsep-separated
paths of Python executables with bpy and numpy installed, and no torch: stand-ins for Blender's own
Python). Parametrize a test over them with:

    @pytest.mark.parametrize("python", blender_pythons(), ids=python_id)
    def test_something(python, extension_zip, tmp_path):
        result = run_in_blender("my_case", python, tmp_path, {"zip": str(extension_zip)})
"""

import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CASES_SCRIPT = TESTS / "blender_cases.py"
BUILD_SCRIPT = ROOT / "scripts" / "build_extension.py"
ENV_VAR = "THUNDER_BLENDER_PYTHONS"
RESULT_PREFIX = "THUNDER_RESULT "
TAIL_LINES = 60
RUNS = {}  # python -> ["case: passed" | "case: FAILED (why)"], for the summary at the end of the run


def blender_pythons():
    """sys.executable, then each Python listed in THUNDER_BLENDER_PYTHONS; a listed path that does not
    exist raises (a typo must not silently test fewer Blenders)."""
    pythons = [sys.executable]
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        entry = entry.strip()
        if not entry:
            continue
        if not (os.path.isfile(entry) and os.access(entry, os.X_OK)):
            raise FileNotFoundError(f"{ENV_VAR} lists {entry!r}, which is not an executable file")
        if entry not in pythons:
            pythons.append(entry)
    return pythons


@functools.lru_cache(maxsize=None)
def _describe(python):
    """(bpy version, Python version) of a Python, read from bpy's metadata without importing bpy."""
    code = ("import importlib.metadata as m, sys\n"
            "try: v = m.version('bpy')\n"
            "except m.PackageNotFoundError: v = 'missing'\n"
            "print(v, sys.version.split()[0])")
    try:
        result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                                env=_child_env())
        bpy, version = result.stdout.split()
    except (OSError, subprocess.TimeoutExpired, ValueError) as error:
        return "unusable", str(error)
    return bpy, version


def bpy_version(python):
    """The version of the bpy wheel installed for python, for example "5.0.1" ("missing" if none)."""
    return _describe(python)[0]


def python_id(python):
    """A test id for a Blender Python: its bpy version, for example "bpy-5.0.1"."""
    return f"bpy-{bpy_version(python)}"


def report_lines():
    """Lines for pytest's header: which Blender Pythons the Blender tests run on."""
    try:
        pythons = blender_pythons()
    except FileNotFoundError as error:
        return [f"Blender Pythons: ERROR: {error}"]
    lines = [f"Blender Pythons ({len(pythons)}; add more with {ENV_VAR}):"]
    lines += [f"  bpy {_describe(p)[0]} on Python {_describe(p)[1]}: {p}" for p in pythons]
    return lines


def summary_lines():
    """Lines for the end of the run (shown even with -q): the Blenders the cases actually ran on."""
    return [f"bpy {_describe(p)[0]} on Python {_describe(p)[1]} ({p}): {', '.join(runs)}"
            for p, runs in RUNS.items()]


def _child_env(work_dir=None):
    env = dict(os.environ)
    # Nothing of the repository or of this test run leaks into Blender's Python: the case script's own
    # folder (tests/) is on its path because Python puts a script's folder there.
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"):
        env.pop(name, None)
    for name in list(env):
        if name.startswith("BLENDER_USER_") or name.startswith("PYTEST_"):
            env.pop(name)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    if work_dir is not None:
        # An isolated user folder: extensions and preferences go there, never into the real user's Blender.
        env["BLENDER_USER_RESOURCES"] = str(Path(work_dir).resolve() / "blender_user")
        # The backend lives in the test environment, which has torch.
        env["THUNDER_BACKEND_PYTHON"] = sys.executable
    return env


def _tail(text, lines=TAIL_LINES):
    return "\n".join(text.splitlines()[-lines:])


def run_in_blender(case, python, work_dir, args=None, timeout=600):
    """Run one case of tests/blender_cases.py in python (a process of its own) and return its result dict.

    Fails the test with the last 60 lines of the child's output when it exits with a non-zero status, runs
    past timeout seconds (its whole process group is killed) or prints no THUNDER_RESULT line. The full
    output is kept in work_dir/<case>.log.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    command = [python, str(CASES_SCRIPT), case, str(work_dir.resolve()), json.dumps(args or {})]
    process = subprocess.Popen(command, cwd=work_dir, env=_child_env(work_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        problem = None if process.returncode == 0 else f"exited with status {process.returncode}"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a grandchild in a group of its own still holds the pipe
            output = "(no output: a process outside the case's group kept its pipe open)"
        problem = f"ran past {timeout:g} s and was killed"
    (work_dir / f"{case}.log").write_text(output)
    label = f"Blender case {case!r} on bpy {bpy_version(python)} ({python})"
    if problem is None:
        results = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
        if results:
            RUNS.setdefault(python, []).append(f"{case} ran")
            return json.loads(results[-1][len(RESULT_PREFIX):])
        problem = f"printed no {RESULT_PREFIX.strip()} line"
    RUNS.setdefault(python, []).append(f"{case} FAILED")
    pytest.fail(f"{label} {problem}; the last {TAIL_LINES} lines of its output:\n{_tail(output)}",
                pytrace=False)


def build_extension_zip(out_dir):
    """Build the extension zip with scripts/build_extension.py (as a command); return its path."""
    result = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--out", str(out_dir)], capture_output=True,
                            text=True, timeout=300, env=_child_env())
    if result.returncode != 0:
        pytest.fail(f"scripts/build_extension.py failed with status {result.returncode}:\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)
    return Path(result.stdout.strip().splitlines()[-1])
