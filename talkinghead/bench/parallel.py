"""Running a benchmark's metric updates in worker processes beside the harness (`BenchConfig.workers`).

Why processes: dlib's Python calls hold the GIL except while its face detector scans (which
`talkinghead.data.faces.map_frames` runs in threads, one detector per thread), so threads cannot
spread the rest of dlib's work over cores; torch ops release it but are already spread over cores
by torch's own threads. CSIM's descriptor, the heaviest dlib call (measured: two threads running
it took 2.6x the time of one), now runs in torch (`talkinghead.nn.dlib_resnet`).

How the numbers stay those of the sequential run: each metric lives in exactly one process and
sees every clip, in clip order, there. The harness scores the run's first clip itself (timing
each metric's update), then forks the workers, which inherit the metric instances *with* that
clip's state, and hands each worker the metrics `assign_metrics` gives it; later methods fork
theirs before their first clip, with the same shares. For every later clip the
harness prepares the inputs of every metric (landmark detection included, with its cache) in
clip order, updates its own metrics and sends the others' inputs to their worker; outcomes are
gathered per clip and accounted in clip order and metric order, so errors, counts and values
are those of the sequential path (``workers=0``). ``compute()`` runs where the metric lives.

Threads: a forked process must keep torch at one intra-op thread (GNU OpenMP cannot start a
thread pool after a fork: measured, the child hangs), so every worker runs with torch, BLAS
(threadpoolctl) and OpenCV at 1 thread; the harness process gets `BenchConfig.threads`
(default: the cores left over, at least 1). Inter-op threads are not set: nothing in the harness
uses torch's inter-op parallelism, and torch allows setting them only once per process.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import time
from typing import Any, Iterator

import torch

__all__ = ["MetricWorkers", "assign_metrics", "available_cores", "default_workers", "thread_limits"]

#: most workers `default_workers` starts (the benchmark's metrics hardly fill more)
MAX_DEFAULT_WORKERS = 3


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(device: str) -> int:
    """`BenchConfig.workers` when not given: 0 off the CPU (CUDA does not survive a fork), else one
    worker per core beyond the harness's own, at most `MAX_DEFAULT_WORKERS` (2 cores: 1)."""
    if torch.device(device).type != "cpu":
        return 0
    return max(0, min(available_cores() - 1, MAX_DEFAULT_WORKERS))


@contextlib.contextmanager
def thread_limits(threads: int | None) -> Iterator[None]:
    """Within the block: torch intra-op threads, BLAS / OpenMP pools (threadpoolctl) and OpenCV at
    `threads` each; restored afterwards. None: leave them as they are."""
    if threads is None:
        yield
        return
    import cv2
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(torch_before)
        cv2.setNumThreads(cv2_before)


def assign_metrics(main_seconds: float, costs: dict[str, float], workers: int) -> dict[str, int]:
    """Metric -> process (0: the harness, 1..workers: a worker), balancing the measured seconds per
    clip: the harness starts with `main_seconds` (loading, generating, input preparation), then
    each metric, most expensive first (ties: name), goes to the least loaded process (ties: the
    lowest number). Deterministic."""
    loads = [float(main_seconds)] + [0.0] * max(0, int(workers))
    owners: dict[str, int] = {}
    for name, cost in sorted(costs.items(), key=lambda item: (-item[1], item[0])):
        owner = min(range(len(loads)), key=lambda i: (loads[i], i))
        owners[name] = owner
        loads[owner] += float(cost)
    return owners


def _reason(error: BaseException) -> str:
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _interrupt_signals() -> set:
    """The signals that interrupt a bench run (`talkinghead.bench.resume`)."""
    import signal

    return {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}


def _fork(process: Any) -> None:
    """Start `process` with the interrupting signals blocked: one arriving during the fork would run
    the harness's handler inside an at-fork callback (logging's), where CPython prints and drops
    the exception, and the interrupt would be lost. It is delivered when the mask is restored."""
    import signal

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _interrupt_signals())
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_main(connection: Any, metrics: dict[str, Any], inherited: list | None = None) -> None:
    """A worker's loop (`inherited`: the harness's ends of the workers' pipes, which the fork copied
    here: closed first, so that the harness's exit, even by SIGKILL, ends this loop with EOF): ("update", clip index, [(metric, args)]) -> ("update", clip index,
    {metric: (error or None, seconds)}); ("compute", [metric]) -> ("compute", {metric: (values or
    None, error or None, seconds, nan_reasons)}); ("stop",) ends it."""
    import signal

    import cv2
    from threadpoolctl import threadpool_limits

    # the parent owns interruption (`talkinghead.bench.resume`): Ctrl-C reaches the whole process
    # group, and the parent stops its workers; SIGTERM / SIGHUP end a worker at once instead of
    # raising the parent's inherited `Interrupted` handler here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _interrupt_signals())  # blocked by the fork (`_fork`)
    for end in inherited or ():
        end.close()
    parent = os.getppid()
    torch.set_num_threads(1)  # see the module docstring: more hangs a forked GNU OpenMP
    cv2.setNumThreads(1)
    threadpool_limits(limits=1)
    while True:
        try:
            while not connection.poll(1.0):
                if os.getppid() != parent:  # the harness is gone (its pipe end may live on elsewhere)
                    return
            message = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        if message[0] == "update":
            _, index, items = message
            outcomes = {}
            for name, args in items:
                tick = time.perf_counter()
                try:
                    with torch.no_grad():
                        metrics[name].update(**args)
                    outcomes[name] = (None, time.perf_counter() - tick)
                except Exception as error:  # noqa: BLE001 - recorded by the harness as this metric's failure
                    outcomes[name] = (_reason(error), time.perf_counter() - tick)
            reply: tuple = ("update", index, outcomes)
        else:
            import warnings

            results = {}
            for name in message[1]:
                tick = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        values = metrics[name].compute()
                    if isinstance(values, dict):
                        values = {k: torch.as_tensor(v).detach().cpu() for k, v in values.items()}
                    results[name] = (values, None, time.perf_counter() - tick,
                                     dict(getattr(metrics[name], "nan_reasons", None) or {}))
                except Exception as error:  # noqa: BLE001
                    results[name] = (None, _reason(error), time.perf_counter() - tick, {})
            reply = ("compute", results)
        connection.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


class MetricWorkers:
    """Forked worker processes, each owning some metrics (module docstring).

    `owners`: metric name -> worker number (1..n); `instances`: metric name -> the metric instance
    the worker takes over (inherited by the fork, state included). Inputs travel pickled (tensors
    with their strides) through a pipe; a send blocks while the worker is still busy with an
    earlier clip, which bounds the clips in flight.
    """

    def __init__(self, owners: dict[str, int], instances: dict[str, Any]):
        import multiprocessing

        context = multiprocessing.get_context("fork")  # the workers inherit the metrics' state
        self.owners = dict(owners)
        self.numbers = sorted(set(self.owners.values()))
        self.connections: dict[int, Any] = {}
        self.processes: dict[int, Any] = {}
        self.dead: dict[int, str] = {}  # worker -> why it stopped answering
        self.pending: dict[int, dict[int, list[str]]] = {n: {} for n in self.numbers}  # worker -> index -> metrics
        for number in self.numbers:
            parent, child = context.Pipe()
            mine = {name: instances[name] for name, owner in self.owners.items() if owner == number}
            ends = [parent, *self.connections.values()]  # the harness's ends so far: closed in the child
            process = context.Process(target=_worker_main, args=(child, mine, ends), daemon=True,
                                      name=f"bench-metrics-{number}")
            _fork(process)
            child.close()
            self.connections[number], self.processes[number] = parent, process

    def _died(self, number: int) -> str:
        if number not in self.dead:
            process = self.processes[number]
            process.join(timeout=1)
            self.dead[number] = f"metric worker {number} stopped (exit code {process.exitcode})"
        return self.dead[number]

    def submit(self, index: int, items: list[tuple[str, dict]]) -> dict[str, tuple[str | None, float]]:
        """Send clip `index`'s inputs [(metric, args)] to the metrics' workers; returns the outcomes
        known at once (the metrics of a worker that has stopped: failed)."""
        failed: dict[str, tuple[str | None, float]] = {}
        by_worker: dict[int, list[tuple[str, dict]]] = {}
        for name, args in items:
            by_worker.setdefault(self.owners[name], []).append((name, args))
        for number, batch in by_worker.items():
            if number not in self.dead:
                try:
                    self.connections[number].send_bytes(
                        pickle.dumps(("update", index, batch), protocol=pickle.HIGHEST_PROTOCOL))
                    self.pending[number][index] = [name for name, _ in batch]
                    continue
                except (OSError, EOFError):
                    self._died(number)
            failed.update({name: (self.dead[number], 0.0) for name, _ in batch})
        return failed

    def receive(self, block: bool) -> list[tuple[int, dict[str, tuple[str | None, float]]]]:
        """Outcomes that have arrived, [(clip index, {metric: (error or None, seconds)})]; with
        `block`, waits for at least one while any is pending. A worker that stops fails its
        pending metrics."""
        from multiprocessing.connection import wait

        out = []
        while True:
            waiting = {self.connections[n]: n for n in self.numbers if self.pending[n] and n not in self.dead}
            if not waiting:
                return out
            ready = wait(list(waiting), timeout=None if block and not out else 0)
            if not ready:
                return out
            for connection in ready:
                number = waiting[connection]
                try:
                    kind, index, outcomes = pickle.loads(connection.recv_bytes())
                    assert kind == "update"
                    self.pending[number].pop(index)
                    out.append((index, outcomes))
                except (EOFError, OSError):
                    why = self._died(number)
                    for index, names in sorted(self.pending[number].items()):
                        out.append((index, {name: (why, 0.0) for name in names}))
                    self.pending[number].clear()
            block = False

    def compute(self, names: list[str]) -> dict[str, tuple[Any, str | None, float, dict]]:
        """``compute()`` of the metrics `names` in their workers (every outcome received first):
        {metric: (values or None, error or None, seconds, nan_reasons)}."""
        if any(self.pending[n] for n in self.numbers if n not in self.dead):
            raise RuntimeError("receive() every clip's outcomes before compute()")
        asked: dict[int, list[str]] = {}
        for name in names:
            asked.setdefault(self.owners[name], []).append(name)
        results: dict[str, tuple[Any, str | None, float, dict]] = {}
        for number, batch in asked.items():
            if number not in self.dead:
                try:
                    self.connections[number].send_bytes(pickle.dumps(("compute", batch)))
                    kind, values = pickle.loads(self.connections[number].recv_bytes())
                    results.update(values)
                    continue
                except (OSError, EOFError):
                    self._died(number)
            results.update({name: (None, self.dead[number], 0.0, {}) for name in batch})
        return results

    def close(self) -> None:
        """Stop the workers (asked first, terminated after 10 s)."""
        for number in self.numbers:
            if number not in self.dead:
                with contextlib.suppress(OSError, EOFError):
                    self.connections[number].send_bytes(pickle.dumps(("stop",)))
        for number in self.numbers:
            process = self.processes[number]
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            self.connections[number].close()
