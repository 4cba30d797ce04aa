"""A plain task must cost the same in an app with celery-resumable as in one without.

The same plain Celery task (``benchmarks/plain_task_app.py``), in an app that does not
import celery-resumable and in one that imports it and declares a ``ResumableTask``
(``BENCH_WITH_RESUMABLE=1``; the resumable task is never called), and in the same app
with ``worker_soft_shutdown_timeout`` set (with which the package counts the tasks a
worker runs), measured three ways, each variant in processes of its own (a package
imported once stays imported):

- (a) eager: a child process times ``--runs`` ``plain.apply()`` calls ``--repeat``
  times and keeps the best; the variants alternate for ``--rounds`` rounds, the first
  turning each round (the soft shutdown setting plays no part without a worker);
- (b) a worker's tracer: the same, in a child process that first builds a worker
  (``app.WorkController``, not started: its bootsteps, the package's too, are set up),
  timing the tracer a worker runs for each message;
- (c) real worker: per variant and round, a queue on Redis is filled with a warm-up and
  ``--tasks`` tasks, then a ``celery worker -P solo`` starts; over the tasks after the
  warm-up the script reads the worker process's CPU time (``/proc/<pid>/task/*/schedstat``,
  its main thread and the others) and the time.

Each row gives the medians of the rounds and the difference of the medians; the range of
the per-round differences shows the noise. The note lines say what each worker process
had loaded: the package's modules and Celery's task signal receivers.

    python benchmarks/bench_plain_task.py [--runs 10000] [--rounds 5] [--tasks 3000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_plain_task.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from celery import Celery

from benchmarks.bench_overhead import positive, seconds
from benchmarks.common import REDIS_URL, median, print_header, print_table, reachable
from benchmarks.workers import (
    ROOT,
    Worker,
    WorkerError,
    delete_keys,
    wait_for_count,
    worker_env,
)

DESCRIPTION = "A plain task in an app with and without celery-resumable, side by side."
APP = "benchmarks.plain_task_app"
VARIANTS = {
    "without": {"BENCH_WITH_RESUMABLE": "0"},
    "with": {"BENCH_WITH_RESUMABLE": "1"},
    "soft": {"BENCH_WITH_RESUMABLE": "1", "BENCH_SOFT_SHUTDOWN": "10"},
}
IN_PROCESS = ("without", "with")
LABELS = {
    "without": "app without the package",
    "with": "app with a ResumableTask",
    "soft": "the same, soft shutdown set",
}
WARM_UP_TASKS = 300
START_TIMEOUT = 60.0


def signed(value: float) -> str:
    """A difference of durations with its sign."""
    return f"{'+' if value >= 0 else '-'}{seconds(abs(value))}"


# -- in-process ------------------------------------------------------------------------


def child(mode: str, variant: str, runs: int, repeat: int) -> dict[str, Any]:
    """Run the timing child of ``variant`` (``mode`` apply or tracer); return its JSON."""
    command = [sys.executable, "-m", APP, "--runs", str(runs), "--repeat", str(repeat)]
    if mode == "tracer":
        command.append("--tracer")
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=worker_env(VARIANTS[variant]),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_children(
    mode: str, variants: Sequence[str], args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Best seconds per run of each variant, per round; and what each loaded."""
    best: dict[str, list[float]] = {variant: [] for variant in variants}
    loaded: dict[str, Any] = {}
    for round_ in range(args.rounds):
        turn = round_ % len(variants)
        for variant in [*variants[turn:], *variants[:turn]]:
            result = child(mode, variant, args.runs, args.repeat)
            best[variant].append(min(result["per_run"]))
            loaded[variant] = result
    return best, loaded


# -- real worker -----------------------------------------------------------------------


class WorkerRound:
    """One worker of one variant on a queue filled before it starts."""

    def __init__(self, variant: str, broker: str, directory: Path) -> None:
        self.queue = f"bench-plain-task-{uuid.uuid4().hex[:8]}"
        self.counter = f"{self.queue}:finished"
        self.env = worker_env(
            {
                **VARIANTS[variant],
                "BENCH_BROKER": broker,
                "BENCH_QUEUE": self.queue,
                "BENCH_COUNTER": self.counter,
                "BENCH_STORE": f"sqlite:///{directory}/store.sqlite3",
            }
        )
        self.log = directory / f"{self.queue}.log"
        self.redis = redis.Redis.from_url(broker)
        self.client = Celery("bench_plain_task_client", broker=broker)
        self.worker: Worker | None = None

    def finished(self) -> int:
        """Tasks finished so far."""
        return int(self.redis.get(self.counter) or 0)

    def run(self, tasks: int) -> tuple[float, float, float, dict[str, Any]]:
        """Send the warm-up and ``tasks`` tasks, start the worker, and time the tasks after
        the warm-up: seconds per task, CPU seconds per task of the main thread and of the
        other threads, what the worker loaded."""
        with self.client.producer_or_acquire() as producer:
            for _ in range(WARM_UP_TASKS + tasks):
                self.client.send_task("bench.plain_counted", queue=self.queue, producer=producer)
        self.worker = Worker(APP, self.queue, self.queue, self.env, self.log)
        wait_for_count(self.redis, self.counter, WARM_UP_TASKS, [self.worker], START_TIMEOUT)
        main, others = self.worker.cpu_seconds()
        start = time.perf_counter()
        first = self.finished()
        end = wait_for_count(
            self.redis, self.counter, WARM_UP_TASKS + tasks, [self.worker], START_TIMEOUT
        )
        main_after, others_after = self.worker.cpu_seconds()
        counted = WARM_UP_TASKS + tasks - first
        loaded = json.loads(self.redis.get(f"{self.counter}:process") or "{}")
        return (
            (end - start) / counted,
            (main_after - main) / counted,
            (others_after - others) / counted,
            loaded,
        )

    def close(self) -> None:
        """Stop the worker, delete the Redis keys."""
        if self.worker is not None:
            self.worker.stop()
        delete_keys(self.redis, f"*{self.queue}*")
        self.client.close()
        self.redis.close()


def measure_worker(
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, Any]]:
    """Seconds and worker CPU seconds per task of each variant, per round; what each loaded."""
    figures: dict[str, dict[str, list[float]]] = {
        figure: {variant: [] for variant in VARIANTS} for figure in ("wall", "main", "others")
    }
    loaded: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="celery-resumable-bench-") as directory:
        for round_ in range(args.worker_rounds):
            turn = round_ % len(VARIANTS)
            order = [*list(VARIANTS)[turn:], *list(VARIANTS)[:turn]]
            for variant in order:
                bench = WorkerRound(variant, args.broker, Path(directory))
                try:
                    wall, main, others, loaded[variant] = bench.run(args.tasks)
                finally:
                    bench.close()
                figures["wall"][variant].append(wall)
                figures["main"][variant].append(main)
                figures["others"][variant].append(others)
    return figures, loaded


# -- the table -------------------------------------------------------------------------


def header(variants: Sequence[str]) -> list[str]:
    """The columns: the app without the package, then each other variant and its difference."""
    columns = ["case", LABELS["without"]]
    for variant in variants[1:]:
        columns += [LABELS[variant], "difference", "per-round range"]
    return columns


def row(case: str, values: dict[str, list[float]], variants: Sequence[str]) -> list[str]:
    """A row: the median of each variant, its difference from the app without the package
    (the difference of the medians) and the range of the per-round differences."""
    without = median(values["without"])
    cells = [case, seconds(without)]
    for variant in variants[1:]:
        value = median(values[variant])
        differences = [v - o for o, v in zip(values["without"], values[variant], strict=True)]
        relative = f" ({(value - without) / without:+.1%})" if without else ""
        cells += [
            seconds(value),
            f"{signed(value - without)}{relative}",
            f"{signed(min(differences))} .. {signed(max(differences))}",
        ]
    return cells


def loaded_note(variant: str, loaded: dict[str, Any]) -> str:
    """What the process of ``variant`` had loaded."""
    if not loaded:
        return f"{LABELS[variant]}: not measured"
    receivers = ", ".join(f"{name} {count}" for name, count in loaded["receivers"].items())
    return (
        f"{LABELS[variant]}: {loaded['modules']} celery_resumable modules loaded; "
        f"Celery signal receivers: {receivers}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--runs", type=positive, default=10_000, help="apply() runs per series")
    parser.add_argument("--repeat", type=positive, default=3, help="series per child process")
    parser.add_argument("--rounds", type=positive, default=5, help="in-process rounds")
    parser.add_argument("--tasks", type=positive, default=3000, help="tasks per worker round")
    parser.add_argument("--worker-rounds", type=positive, default=3, help="worker rounds")
    parser.add_argument("--broker", default=REDIS_URL, help="Redis broker of the workers")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Measure both variants both ways and print the table."""
    args = parse_args(argv)
    started = time.perf_counter()
    print_header("A plain task in an app without and with celery-resumable")
    best, loaded = measure_children("apply", IN_PROCESS, args)
    print_table(
        f"(a) Eager: plain.apply(), best of {args.repeat} series of {args.runs:,} runs per "
        f"process, median of {args.rounds} rounds",
        header(IN_PROCESS),
        [row("per apply()", best, IN_PROCESS)],
        [loaded_note(variant, loaded.get(variant, {})) for variant in IN_PROCESS],
    )
    variants = list(VARIANTS)
    best, loaded = measure_children("tracer", variants, args)
    print_table(
        f"(b) A worker's tracer, in-process: a built worker (app.WorkController, solo, not "
        f"started), best of {args.repeat} series of {args.runs:,} runs per process, median "
        f"of {args.rounds} rounds",
        header(variants),
        [row("per task", best, variants)],
        [
            *(loaded_note(variant, loaded.get(variant, {})) for variant in variants),
            "the tracer is what a worker runs for each message: signals, the task, its "
            "result (ignored here); soft shutdown set: worker_soft_shutdown_timeout = 10",
        ],
    )

    if not reachable(args.broker):
        print(f"(c) skipped: Redis does not answer at {args.broker}")
    else:
        try:
            figures, workers = measure_worker(args)
        except WorkerError as exc:
            print(f"(c) failed: {exc}")
        else:
            print_table(
                f"(c) Real worker (solo pool, Redis): {args.tasks:,} tasks after "
                f"{WARM_UP_TASKS} to warm up, a new worker per variant and round, median of "
                f"{args.worker_rounds} rounds",
                header(list(VARIANTS)),
                [
                    row("CPU per task, main thread", figures["main"], list(VARIANTS)),
                    row("CPU per task, other threads", figures["others"], list(VARIANTS)),
                    row("time per task", figures["wall"], list(VARIANTS)),
                ],
                [
                    *(loaded_note(variant, workers.get(variant, {})) for variant in VARIANTS),
                    "CPU: the worker process's CPU time over the tasks, its main thread (which "
                    "runs the tasks) and its other threads",
                    "time: from the first task after the warm-up to the last; the queue is "
                    "filled before the worker starts",
                    "the task adds one to a Redis counter (in every app)",
                ],
            )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
