"""Run Celery's own unit tests with and without ResumableTask as the default task class.

The promise checked: a task that never calls a step function behaves like a plain Celery
task, apart from the documented defaults. The script

1. downloads the sdist of the installed Celery version with pip (cached outside the
   repository) and installs the few test dependencies the chosen tests need;
2. runs a subset of its unit tests twice, in Celery's source tree with Celery's pytest
   configuration: once as is, once with ``tests/compat/plugin.py`` making every app's
   default task class ResumableTask;
3. fails when a test passes without the injection and does not pass with it, unless it
   is listed in ``tests/compat/expected_differences.py``; and when a listed test no
   longer differs (a stale entry), so the list and docs/concepts.md stay true.

Usage: ``python tests/compat/run_celery_suite.py [--serial] [--keep] [--cache-dir DIR]``.
Exit status 0 when the gate passes, 1 when it finds a difference, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The tests run, relative to Celery's source tree.
SUBSET = (
    "t/unit/tasks",
    "t/unit/test_canvas.py",
    "t/unit/worker/test_request.py",
    "t/unit/app/test_app.py",
)

#: Test dependencies of SUBSET beyond Celery, pytest and this project's own test extra:
#: distribution name -> module to look for. Versions come from Celery's requirements.
TEST_DEPENDENCIES = {"freezegun": "freezegun", "pydantic": "pydantic"}

#: Seconds a single Celery test may take before pytest-timeout stops it.
TEST_TIMEOUT = 120

#: Unexpected differences printed one by one; the rest are summarised by error.
LISTED = 40


class GateError(Exception):
    """Raised when the gate cannot run or its runs cannot be trusted."""


def cache_root() -> Path:
    """Where Celery's sdist is kept between runs (outside the repository)."""
    explicit = os.environ.get("CELERY_RESUMABLE_COMPAT_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "celery-resumable-compat"


def celery_source(version: str, cache: Path) -> Path:
    """Return Celery's unpacked sdist for ``version``, downloading it once."""
    source = cache / f"celery-{version}"
    if (source / "t" / "unit" / "conftest.py").is_file():
        return source
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--no-binary", ":all:", f"celery=={version}", "-d", scratch),
            ],
            check=True,
        )
        archives = sorted(Path(scratch).glob("celery-*.tar.gz"))
        if not archives:
            raise GateError(f"pip downloaded no sdist of celery=={version}")
        with tarfile.open(archives[0]) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(scratch, filter="data")
            else:  # pragma: no cover - Python before 3.11.4; an sdist pip just fetched
                archive.extractall(scratch)
        unpacked = Path(scratch) / f"celery-{version}"
        if not (unpacked / "t" / "unit" / "conftest.py").is_file():
            raise GateError(f"the sdist of celery=={version} has no t/unit tests")
        shutil.rmtree(source, ignore_errors=True)
        unpacked.rename(source)
    return source


def requirement_pins(source: Path) -> dict[str, str]:
    """Requirement lines of Celery's requirements/ files, by lower-case distribution name."""
    pins: dict[str, str] = {}
    for path in sorted((source / "requirements").rglob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            match = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*[<>=!~]", line)
            if match:
                pins.setdefault(match.group(1).lower(), line)
    return pins


def install_test_dependencies(source: Path) -> list[str]:
    """Install the missing test dependencies of SUBSET with this interpreter's pip."""
    needed = dict(TEST_DEPENDENCIES)
    if importlib.util.find_spec("_pytest.subtests") is None:  # built into pytest 9+
        needed["pytest-subtests"] = "pytest_subtests"
    missing = [name for name, module in needed.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return []
    pins = requirement_pins(source)
    specs = [pins.get(name, name).split(";", 1)[0].strip() for name in missing]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *specs], check=True)
    return specs


def child_environment() -> dict[str, str]:
    """The environment of the test runs: this repository first on the import path."""
    env = dict(os.environ)
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONWARNINGS"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if part
    )
    return env


def check_import_location(source: Path, env: dict[str, str]) -> str:
    """Return where the runs import celery_resumable from; raise unless it is this repo."""
    found = subprocess.run(
        [sys.executable, "-c", "import celery_resumable; print(celery_resumable.__file__)"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not _inside(found, REPO_ROOT / "celery_resumable"):
        raise GateError(f"the runs would import celery_resumable from {found}, not {REPO_ROOT}")
    return found


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def own_pytest_plugins() -> list[str]:
    """Pytest entry points of this project, kept out of both runs."""
    names = []
    for entry_point in importlib.metadata.entry_points(group="pytest11"):
        if entry_point.value.split(":")[0].split(".")[0] == "celery_resumable":
            names.append(entry_point.name)
    return names


@dataclasses.dataclass
class Run:
    """One pytest run over SUBSET."""

    name: str
    command: list[str]
    outcomes_file: Path
    log_file: Path
    seconds: float = 0.0
    returncode: int | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def outcomes(self) -> dict[str, str]:
        return dict(self.data.get("outcomes", {}))


def make_run(name: str, source: Path, workdir: Path, inject: bool) -> Run:
    """The pytest command of one run, in Celery's tree and with its configuration."""
    outcomes_file = workdir / f"{name}.json"
    command = [
        *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
        *("--rootdir", str(source), "-c", str(source / "pyproject.toml")),
        *("-p", "tests.compat.outcomes", f"--compat-outcomes={outcomes_file}"),
    ]
    for plugin in own_pytest_plugins():
        command += ["-p", f"no:{plugin}"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command.append(f"--timeout={TEST_TIMEOUT}")
    if inject:
        command += ["-p", "tests.compat.plugin"]
    command += list(SUBSET)
    return Run(name, command, outcomes_file, workdir / f"{name}.log")


def execute(runs: list[Run], source: Path, env: dict[str, str], serial: bool) -> None:
    """Run the pytest commands, side by side unless ``serial``."""
    started: list[tuple[Run, subprocess.Popen[bytes], float, Any]] = []
    for run in runs:
        log = run.log_file.open("wb")
        process = subprocess.Popen(
            run.command, cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        started.append((run, process, time.monotonic(), log))
        if serial:
            _finish(*started[-1])
    for item in started:
        if item[0].returncode is None:
            _finish(*item)


def _finish(run: Run, process: subprocess.Popen[bytes], start: float, log: Any) -> None:
    run.returncode = process.wait()
    run.seconds = time.monotonic() - start
    log.close()
    if run.outcomes_file.is_file():
        run.data = json.loads(run.outcomes_file.read_text(encoding="utf-8"))


def check_run(run: Run) -> None:
    """Raise GateError unless the run ran the tests to the end (failures allowed)."""
    if not run.data:
        raise GateError(f"the {run.name} run wrote no outcomes (exit {run.returncode})")
    if run.returncode not in (0, 1) or run.data.get("exitstatus") not in (0, 1):
        raise GateError(f"the {run.name} run did not complete (exit {run.returncode})")
    errors = run.data.get("collection_errors") or {}
    if errors:
        raise GateError(f"the {run.name} run could not collect: {errors}")
    if not run.outcomes:
        raise GateError(f"the {run.name} run ran no tests")


def check_injection(run: Run) -> dict[str, Any]:
    """Raise GateError unless the injected run really used ResumableTask from this repo."""
    evidence: dict[str, Any] | None = run.data.get("evidence")
    if not evidence:
        raise GateError("the injected run did not load tests/compat/plugin.py")
    for name in ("apps_injected", "tests_with_resumable_app", "resumable_task_classes"):
        if not evidence.get(name):
            raise GateError(f"the injection took no effect ({name} = 0): {evidence}")
    if not _inside(str(evidence.get("celery_resumable_file")), REPO_ROOT / "celery_resumable"):
        raise GateError(f"the injected run used {evidence.get('celery_resumable_file')}")
    return evidence


@dataclasses.dataclass
class Comparison:
    """What differs between the run without the injection and the run with it."""

    tests: int
    differences: dict[str, tuple[str, str]]
    expected: dict[str, str]
    unexpected: dict[str, tuple[str, str]]
    stale: dict[str, str]
    fixed: list[str]


def compare(
    plain: dict[str, str], injected: dict[str, str], expected: dict[str, str]
) -> Comparison:
    """Compare per-test outcomes against the expected differences."""
    # In the order of the injected run, then tests it did not run.
    order = [*injected, *(test for test in plain if test not in injected)]
    differences = {
        test: (plain[test], injected.get(test, "not run"))
        for test in order
        if plain.get(test) == "passed" and injected.get(test) != "passed"
    }
    stale = {}
    for test in sorted(set(expected) - set(differences)):
        without, with_ = plain.get(test, "not run"), injected.get(test, "not run")
        stale[test] = f"without: {without}, with: {with_}"
    return Comparison(
        tests=len(set(plain) | set(injected)),
        differences=differences,
        expected={test: expected[test] for test in differences if test in expected},
        unexpected={test: pair for test, pair in differences.items() if test not in expected},
        stale=stale,
        fixed=sorted(
            test
            for test, outcome in injected.items()
            if outcome == "passed" and plain.get(test, "passed") != "passed"
        ),
    )


def _count(outcomes: dict[str, str], *kinds: str) -> int:
    return sum(1 for outcome in outcomes.values() if outcome in kinds)


def report(
    version: str,
    plain: Run,
    injected: Run,
    result: Comparison,
    evidence: dict[str, Any],
    timings: dict[str, float],
) -> None:
    """Print the summary table and the tests that need attention."""
    rows = [
        ("tests run", len(plain.outcomes), len(injected.outcomes)),
        ("passed", _count(plain.outcomes, "passed"), _count(injected.outcomes, "passed")),
        (
            "failed or error",
            _count(plain.outcomes, "failed", "error"),
            _count(injected.outcomes, "failed", "error"),
        ),
        (
            "skipped or xfailed",
            _count(plain.outcomes, "skipped", "xfailed"),
            _count(injected.outcomes, "skipped", "xfailed"),
        ),
    ]
    print()
    print(f"Celery {version} unit tests, with and without ResumableTask as the default task class")
    print(f"subset: {' '.join(SUBSET)}")
    print()
    print(f"  {'':<34}{'without':>9}{'with':>9}")
    for label, without, with_ in rows:
        print(f"  {label:<34}{without:>9}{with_:>9}")
    print()
    summary = [
        ("differences (pass without, not with)", len(result.differences)),
        ("  expected", len(result.expected)),
        ("  unexpected", len(result.unexpected)),
        ("stale expected entries", len(result.stale)),
        ("pass only with the injection", len(result.fixed)),
    ]
    for label, value in summary:
        print(f"  {label:<43}{value:>9}")
    print()
    runs = evidence.get("resumable_runs")
    print(
        f"  injection: {evidence['apps_injected']} apps, {evidence['tests_with_resumable_app']}"
        f" tests whose app fixture used it, {evidence['resumable_task_classes']} task classes,"
        f" {'?' if runs is None else runs} resumable runs,"
        f" {evidence.get('checkpoint_rows_cleared', 0)} checkpoint rows written"
    )
    print(f"  celery_resumable: {evidence['celery_resumable_file']}")
    print(f"  celery: {plain.data.get('celery_file')}")
    print(
        "  time: "
        + ", ".join(f"{label} {seconds:.0f} s" for label, seconds in timings.items())
        + f" (runs: without {plain.seconds:.0f} s, with {injected.seconds:.0f} s)"
    )
    messages: dict[str, str] = injected.data.get("messages", {})
    if result.unexpected:
        print("\nUnexpected differences (pass with Celery's Task, not with ResumableTask),")
        print("in the order they ran (a failure can cascade into the tests after it):")
        for test in list(result.unexpected)[:LISTED]:
            print(f"  {test}  [{result.unexpected[test][1]}]")
            if test in messages:
                print(f"      {messages[test]}")
        if len(result.unexpected) > LISTED:
            print(f"  ... and {len(result.unexpected) - LISTED} more")
            causes = Counter(messages.get(test, "?") for test in result.unexpected)
            print("  most frequent errors:")
            for message, count in causes.most_common(5):
                print(f"  {count:>6} x {message}")
    if result.stale:
        print("\nStale entries of tests/compat/expected_differences.py (no longer differ):")
        for test, status in result.stale.items():
            print(f"  {test}  ({status})")
    if result.fixed:
        print("\nTests that fail with Celery's Task and pass with ResumableTask:")
        for test in result.fixed:
            print(f"  {test}")


def main(argv: list[str] | None = None) -> int:
    """Run the gate; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the sdist is kept")
    parser.add_argument("--serial", action="store_true", help="run one pytest after the other")
    parser.add_argument("--keep", action="store_true", help="keep the logs and outcome files")
    options = parser.parse_args(argv)

    sys.path.insert(0, str(REPO_ROOT))
    from tests.compat.expected_differences import EXPECTED_DIFFERENCES

    began = time.monotonic()
    version = importlib.metadata.version("celery")
    workdir = Path(tempfile.mkdtemp(prefix="celery-resumable-compat-runs-"))
    keep = options.keep
    try:
        source = celery_source(version, options.cache_dir or cache_root())
        installed = install_test_dependencies(source)
        if installed:
            print(f"installed test dependencies: {' '.join(installed)}")
        prepared = time.monotonic()
        env = child_environment()
        check_import_location(source, env)
        plain = make_run("without", source, workdir, inject=False)
        injected = make_run("with", source, workdir, inject=True)
        execute([plain, injected], source, env, options.serial)
        for run in (plain, injected):
            check_run(run)
        evidence = check_injection(injected)
        result = compare(plain.outcomes, injected.outcomes, EXPECTED_DIFFERENCES)
        finished = time.monotonic()
        timings = {
            "preparation": prepared - began,
            "tests": finished - prepared,
            "total": finished - began,
        }
        report(version, plain, injected, result, evidence, timings)
    except (GateError, subprocess.CalledProcessError) as error:
        keep = True
        print(f"\ncompat gate could not run: {error}", file=sys.stderr)
        print(f"logs and outcomes: {workdir}", file=sys.stderr)
        return 2
    failed = bool(result.unexpected or result.stale)
    keep = keep or failed
    if keep:
        print(f"\nlogs and outcomes: {workdir}")
    print(f"\ncompat gate: {'FAIL' if failed else 'PASS'}")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
