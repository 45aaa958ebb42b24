"""Each figure of the benchmark: the system's measurement and its floor, same run.

Every loop has a count and a deadline. Floors and measured trials are
interleaved where both are repeated, so that load from other processes on
this shared machine falls on both alike.
"""

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
import psutil

from bench.client import SSEClient
from bench.stats import summary
from bench.system import child, rss

FINAL = {"succeeded", "failed", "aborted", "timed_out", "lost"}
STAMP_RE = re.compile(rb'"line": "stamp (\d+) ([0-9.]+)", "ts": "([^"]+)"')
NUMBER_RE = re.compile(rb'"line": "(\d+)')
LINE_NO_RE = re.compile(rb'"line": "line (\d+) ')
# The rate child's lines carry the time they were printed (bench/children/rate.py).
PRINTED_AT_RE = re.compile(rb'"line": "line \d+ at (\d+\.\d+) ')


@dataclass
class System:
    """What a figure needs to reach the system under test."""

    port: int
    token: str
    server_pid: int
    worker_pid: int
    vendor: str
    quick: bool
    db_counter: object  # () -> int: statements/transactions seen by the database, or None
    db_size: object = None  # () -> int: bytes the database takes (see backend.Database.size)
    session_cookie: str = ""
    profile_dir: str = ""  # where to write profiles (the page's JavaScript), if anywhere

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )


class BenchError(Exception):
    pass


async def start_run(http: httpx.AsyncClient, task: str, params: dict | None = None) -> dict:
    response = await http.post(f"/api/tasks/{task}/runs/", json={"params": params or {}})
    if response.status_code != 202:
        raise BenchError(f"starting {task}: {response.status_code} {response.text[:200]}")
    return response.json()


async def wait_final(http: httpx.AsyncClient, run_id: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = (await http.get(f"/api/runs/{run_id}/")).json()
        if run["status"] in FINAL:
            return run
        await asyncio.sleep(0.02)
    raise BenchError(f"run {run_id} not final within {timeout} s")


async def wait_status(http: httpx.AsyncClient, run_id: int, status: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = (await http.get(f"/api/runs/{run_id}/")).json()
        if run["status"] == status and run.get("pid"):
            return run
        if run["status"] in FINAL:
            raise BenchError(f"run {run_id} ended early: {run['status']} {run.get('error')}")
        await asyncio.sleep(0.01)
    raise BenchError(f"run {run_id} not {status} within {timeout} s")


def ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


# --- start latency ---


def _spawn_first_line() -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(child("first_line"), stdout=subprocess.PIPE, start_new_session=True)
    try:
        proc.stdout.readline()
        return time.perf_counter() - t0
    finally:
        proc.stdout.close()
        proc.wait(timeout=10)


TS_RE = re.compile(rb'"ts": "([^"]+)"')


def _epoch(text: str | bytes | None) -> float | None:
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def start_latency(system: System, trials: int) -> dict:
    measured, floor = [], []
    # Where the time goes, from the run's own timestamps (1 ms resolution):
    # web (POST sent -> run created), claim (-> started_at), child (-> first
    # line read by the supervisor), delivery (-> at the SSE client).
    parts: dict[str, list[float]] = {"web": [], "claim": [], "child": [], "delivery": []}
    async with system.http() as http:
        await http.get("/api/tasks/first-line/")  # warm the connection and the server
        # One untimed run first: the supervisor may still be starting up.
        warm = await start_run(http, "first-line")
        await wait_final(http, warm["id"], timeout=60)
        for _ in range(trials):
            floor.append(await asyncio.to_thread(_spawn_first_line))
            first_line: list[float] = []

            def on_events(block: bytes, received: float, first_line=first_line) -> None:
                at = block.find(b"event: log\n")
                if not first_line and at >= 0:
                    ts = TS_RE.search(block, at)
                    first_line += [time.perf_counter(), received, ts.group(1) if ts else None]

            wall0 = time.time()
            t0 = time.perf_counter()
            run = await start_run(http, "first-line")
            client = SSEClient(
                system.port, f"/api/runs/{run['id']}/events/", system.token, on_events
            )
            await client.run(asyncio.get_running_loop().time() + 20)
            if not first_line:
                raise BenchError(f"run {run['id']}: no line arrived (status {client.status})")
            measured.append(first_line[0] - t0)
            final = await wait_final(http, run["id"])
            created, started = _epoch(final["created_at"]), _epoch(final["started_at"])
            read = _epoch(first_line[2])
            if created and started and read:
                parts["web"].append(created - wall0)
                parts["claim"].append(started - created)
                parts["child"].append(read - started)
                parts["delivery"].append(first_line[1] - read)
    m, f = summary(ms(measured)), summary(ms(floor))
    return {
        "unit": "ms",
        "measured": m,
        "floor": f,
        "ratio": m["median"] / f["median"],
        "overhead_median": m["median"] - f["median"],
        "parts": {name: summary(ms(values)) for name, values in parts.items()},
        "claim_ms_by_trial": [round(v, 1) for v in ms(parts["claim"])],
        "target": "median <= floor + 15 ms",
        "met": m["median"] <= f["median"] + 15,
    }


# --- log latency (and the polling baseline) ---


def _round_trips(count: int, interval: float, stop: threading.Event) -> list[float]:
    """Context for absolute latencies: a pipe round trip to another process, every interval.

    Each round trip is two cross-process wake-ups, which is what every hop of
    the log path costs on a loaded machine.
    """
    proc = subprocess.Popen(
        child("echo"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    out = []
    try:
        for _ in range(count):
            if stop.is_set():
                break
            t0 = time.perf_counter()
            os.write(proc.stdin.fileno(), b"x\n")
            os.read(proc.stdout.fileno(), 16)
            out.append(time.perf_counter() - t0)
            time.sleep(interval)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(timeout=10)
    return out


async def log_latency(system: System, ticks: int) -> dict:
    """A stamp every 20 ms; latency = receive time - stamp, at an SSE client and a poller."""
    stamps: dict[int, float] = {}
    latencies: list[float] = []
    start_at: list[float] = []

    read: list[float] = []  # stamp -> the supervisor read the line (the event's ts, 1 ms)
    delivered: list[float] = []  # ts -> the SSE client has it (store, wake, fetch, send)

    def on_events(block: bytes, received: float) -> None:
        for index, stamp, ts in STAMP_RE.findall(block):
            value = float(stamp)
            stamps[int(index)] = value
            if start_at and value > start_at[0]:
                latencies.append(received - value)
                at = datetime.fromisoformat(ts.decode().replace("Z", "+00:00")).timestamp()
                read.append(at - value)
                delivered.append(received - at)

    polls: list[tuple[float, int]] = []  # (received, newest index the status showed)

    async def poll(http: httpx.AsyncClient, run_id: int, stop: asyncio.Event) -> None:
        for _ in range(1000):
            run = (await http.get(f"/api/runs/{run_id}/")).json()
            received = time.time()
            progress = run.get("progress") or {}
            if progress.get("current"):
                polls.append((received, int(progress["current"])))
            if run["status"] in FINAL or stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), 2.0)
            except TimeoutError:
                pass

    async with system.http() as http:
        run = await start_run(http, "stamps", {"count": str(ticks)})
        client = SSEClient(system.port, f"/api/runs/{run['id']}/events/", system.token, on_events)
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(http, run["id"], stop))
        reader = asyncio.create_task(
            client.run(asyncio.get_running_loop().time() + ticks * 0.02 + 30)
        )
        stop_trips = threading.Event()
        trips = asyncio.create_task(asyncio.to_thread(_round_trips, ticks, 0.02, stop_trips))
        # Only lines printed after the stream was open count (not the replay).
        for _ in range(2000):
            if client.connected_at or reader.done():
                break
            await asyncio.sleep(0.001)
        start_at.append(client.connected_at or time.time())
        try:
            await reader
        finally:
            stop.set()
            stop_trips.set()
            await poller
            round_trips = await trips
        await wait_final(http, run["id"])
    if len(stamps) != ticks:
        raise BenchError(f"log latency: {len(stamps)} of {ticks} stamps arrived")
    # Polling: each poll reveals every line up to the index it shows.
    polled: list[float] = []
    seen = 0
    for received, newest in polls:
        for index in range(seen + 1, newest + 1):
            if index in stamps and stamps[index] > start_at[0]:
                polled.append(received - stamps[index])
        seen = max(seen, newest)
    m = summary(ms(latencies))
    p = summary(ms(polled)) if polled else None
    return {
        "unit": "ms",
        "measured": m,
        "floor": None,
        "polling": p,
        "polling_vs_sse": (p["median"] / m["median"]) if p and m["median"] else None,
        "pipe_round_trip": summary(ms(round_trips)),
        # Where the time goes, split at the event's ts (when the supervisor read the line).
        "child_to_supervisor": summary(ms(read)),
        "supervisor_to_client": summary(ms(delivered)),
        "target": "median <= 10 ms, p99 <= 25 ms",
        "met": m["median"] <= 10 and m["p99"] <= 25,
    }


# --- throughput ---


def _pipe_floor(count: int, width: int = 0) -> tuple[float, int]:
    """The same child read straight from a pipe: seconds until EOF, and lines counted."""
    argv = child("numbered", count, width)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
    lines = 0
    try:
        fd = proc.stdout.fileno()
        while data := os.read(fd, 65536):
            lines += data.count(b"\n")
        return time.perf_counter() - t0, lines
    finally:
        proc.stdout.close()
        proc.wait(timeout=30)


class NumberCheck:
    """Checks that log lines 1..N arrive once each, in order."""

    def __init__(self):
        self.next = 1
        self.bad = 0
        self.last_at = 0.0

    def __call__(self, block: bytes, received: float) -> None:
        numbers = NUMBER_RE.findall(block)
        if numbers:
            first, last = int(numbers[0]), int(numbers[-1])
            if first != self.next or last - first + 1 != len(numbers):
                self.bad += 1
            self.next = last + 1
            self.last_at = time.perf_counter()


def raw_log_bytes(count: int) -> int:
    """Bytes `numbered COUNT 0` prints: "1\n" .. "COUNT\n"."""
    return sum(len(str(i)) + 1 for i in range(1, count + 1))


async def throughput(system: System, count: int, trials: int) -> dict:
    rates, floor_rates, missing, growth = [], [], [], []
    async with system.http() as http:
        for _ in range(trials):
            size_before = await asyncio.to_thread(system.db_size) if system.db_size else None
            seconds, lines = await asyncio.to_thread(_pipe_floor, count)
            if lines != count:
                raise BenchError(f"floor: {lines} of {count} lines")
            floor_rates.append(count / seconds)
            check = NumberCheck()
            t0 = time.perf_counter()
            run = await start_run(http, "numbered", {"count": str(count), "width": "0"})
            client = SSEClient(system.port, f"/api/runs/{run['id']}/events/", system.token, check)
            await client.run(asyncio.get_running_loop().time() + 120)
            received = check.next - 1
            missing.append(count - received + check.bad)
            rates.append(count / (check.last_at - t0) if received == count else 0.0)
            await wait_final(http, run["id"])
            if size_before is not None:
                growth.append(await asyncio.to_thread(system.db_size) - size_before)
    m, f = summary(rates), summary(floor_rates)
    raw = raw_log_bytes(count)
    db_growth = None
    if growth:
        biggest = max(growth)
        db_growth = {
            "bytes": biggest,
            "raw_bytes": raw,
            "ratio": biggest / raw,
            "target": "<= 1.5 x the log's raw bytes",
            "met": biggest <= 1.5 * raw,
        }
    return {
        "db_growth": db_growth,
        "unit": "lines/s",
        "lines": count,
        "measured": m,
        "floor": f,
        "ratio": m["median"] / f["median"],
        "missing": sum(missing),
        "target": ">= 250,000 lines/s and 0 missing",
        "met": m["median"] >= 250_000 and sum(missing) == 0,
    }


# --- control latency ---


def _state(proc: psutil.Process) -> str:
    try:
        status = proc.status()
    except psutil.NoSuchProcess:
        return "gone"
    if status == psutil.STATUS_ZOMBIE:
        return "gone"
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return "stopped"
    return "running"


def _until(
    procs: list[psutil.Process], state: str, t0: float, timeout: float = 10, firsts=None
) -> float:
    """Poll every process (~1 ms) until all are in `state`; seconds since t0.

    `firsts`, if given, gets the seconds until the first process was in `state`.
    """
    deadline = t0 + timeout
    while True:
        now = time.perf_counter()
        states = [_state(p) == state for p in procs]
        if firsts is not None and any(states) and not firsts:
            firsts.append(now - t0)
        if all(states):
            return now - t0
        if now > deadline:
            raise BenchError(f"processes not {state} within {timeout} s")
        time.sleep(0.001)


def _tree(pid: int, want: int = 3, timeout: float = 10) -> list[psutil.Process]:
    """The leader and its descendants, once all exist and one has left the group (setsid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            leader = psutil.Process(pid)
            procs = [leader, *leader.children(recursive=True)]
            escaped = any(os.getpgid(p.pid) != os.getpgid(pid) for p in procs[1:])
        except (psutil.Error, ProcessLookupError):
            procs, escaped = [], False
        if len(procs) >= want and escaped:
            return procs
        time.sleep(0.01)
    raise BenchError(f"the tree of {pid} did not reach {want} processes")


def _floor_control() -> dict[str, float]:
    """The same tree started directly: killpg (plus the escapee) to each state."""
    proc = subprocess.Popen(
        child("tree"), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    started: list[psutil.Process] = []
    try:
        proc.stdout.readline()
        procs = _tree(proc.pid)
        escapees = [p.pid for p in procs if os.getpgid(p.pid) != proc.pid]
        started.extend(procs)

        def signal_all(sig: int) -> None:
            os.killpg(proc.pid, sig)
            for pid in escapees:
                os.kill(pid, sig)

        out = {}
        for action, sig, state in (
            ("pause", signal.SIGSTOP, "stopped"),
            ("resume", signal.SIGCONT, "running"),
            ("abort", signal.SIGTERM, "gone"),
        ):
            t0 = time.perf_counter()
            signal_all(sig)
            if action == "abort":
                # The bench is the leader's parent: reap it as the supervisor would.
                reaper = threading.Thread(target=proc.wait, daemon=True)
                reaper.start()
            out[action] = _until(procs, state, t0)
        return out
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for member in started:  # the escapee too, whatever went wrong
            try:
                member.kill()
            except psutil.Error:
                pass
        proc.wait(timeout=10)


def _action_times(run_id: int, action: str) -> tuple[float | None, float | None]:
    """When the web process recorded the request, and when the supervisor marked it applied.

    Read from the database (this process has Django set up on the same one).
    """
    from django.db import connection

    from taskrunner.models import RunAction

    try:
        row = (
            RunAction.objects.filter(run_id=run_id, action=action)
            .order_by("-id")
            .values_list("at", "applied_at")
            .first()
        )
    finally:
        connection.close()
    if row is None:
        return None, None
    return row[0].timestamp(), row[1].timestamp() if row[1] else None


def _system_control(system: System, sync: httpx.Client, run_id: int, pid: int) -> dict:
    procs = _tree(pid)
    out = {}
    for action, state in (("pause", "stopped"), ("resume", "running"), ("abort", "gone")):
        done: list = []
        firsts: list[float] = []
        wall0 = time.time()
        t0 = time.perf_counter()

        def post(action=action, done=done) -> None:
            response = sync.post(f"/api/runs/{run_id}/{action}/")
            done.append((response, time.perf_counter()))

        request = threading.Thread(target=post)
        request.start()
        try:
            out[action] = _until(procs, state, t0, firsts=firsts)
        finally:
            request.join(10)
        if not done or done[0][0].status_code != 202:
            raise BenchError(f"{action}: {done[0][0].status_code if done else 'no answer'}")
        out[f"{action}:answered"] = done[0][1] - t0
        out[f"{action}:first"] = firsts[0] if firsts else out[action]
        out[f"{action}:wall0"] = wall0
        if action != "abort":
            # The run records the new status; wait for it before the next request.
            deadline = time.monotonic() + 10
            want = "paused" if action == "pause" else "running"
            while sync.get(f"/api/runs/{run_id}/").json()["status"] != want:
                if time.monotonic() > deadline:
                    raise BenchError(f"run {run_id} not {want} after {action}")
                time.sleep(0.02)
    return out


async def control_latency(system: System, trials: int) -> dict:
    measured = {"pause": [], "resume": [], "abort": []}
    floor = {"pause": [], "resume": [], "abort": []}
    detail: dict[str, list[float]] = {}
    headers = {"Authorization": f"Bearer {system.token}"}
    async with system.http() as http:
        with httpx.Client(base_url=system.base, headers=headers, timeout=30) as sync:
            sync.get("/api/tasks/tree/")
            for _ in range(trials):
                for action, value in (await asyncio.to_thread(_floor_control)).items():
                    floor[action].append(value)
                run = await start_run(http, "tree")
                run = await wait_status(http, run["id"], "running")
                values = await asyncio.to_thread(
                    _system_control, system, sync, run["id"], run["pid"]
                )
                await wait_final(http, run["id"])
                for action in measured:
                    wall0 = values.pop(f"{action}:wall0")
                    requested, applied = await asyncio.to_thread(_action_times, run["id"], action)
                    if requested is not None:
                        values[f"{action}:recorded"] = requested - wall0
                    if applied is not None:
                        values[f"{action}:applied"] = applied - wall0
                for action, value in values.items():
                    (measured if action in measured else detail).setdefault(action, []).append(
                        value
                    )
    result = {"unit": "ms", "target": "p99 <= floor p99 + 10 ms", "actions": {}}
    met = True
    for action in measured:
        m, f = summary(ms(measured[action])), summary(ms(floor[action]))
        ok = m["p99"] <= f["p99"] + 10
        met = met and ok
        result["actions"][action] = {
            "measured": m,
            "floor": f,
            "ratio": m["median"] / f["median"] if f["median"] else None,
            # Where the time goes: the HTTP answer (202), the first process
            # in the new state (the group signal), the last one (the walk).
            "answered": summary(ms(detail.get(f"{action}:answered", []))),
            "first_process": summary(ms(detail.get(f"{action}:first", []))),
            "recorded_by_web": summary(ms(detail.get(f"{action}:recorded", []))),
            "marked_applied": summary(ms(detail.get(f"{action}:applied", []))),
            "met": ok,
        }
    result["met"] = met
    return result


# --- fan-out ---


async def _hub_stats(http: httpx.AsyncClient) -> dict:
    return (await http.get("/api/debug/hub/")).json()


async def _fan_out_once(system: System, http: httpx.AsyncClient, clients: int, lines: int) -> dict:
    run = await start_run(http, "rate", {"rate": "50", "seconds": str(lines / 50), "wait": "wait"})
    run = await wait_status(http, run["id"], "running")
    run_id = run["id"]
    loop = asyncio.get_running_loop()
    line_counts = [0] * clients
    ready = [False] * clients
    # Latency seen by the clients: receive time minus the printed time of the
    # newest line in each block read (one sample per read, every client).
    latencies: list[float] = []

    def make(i: int):
        def on_events(block: bytes, received: float) -> None:
            if not ready[i] and b'"line": "ready"' in block:
                ready[i] = True
            line_counts[i] += len(LINE_NO_RE.findall(block))
            stamps = PRINTED_AT_RE.findall(block)
            if stamps:
                latencies.append(received - float(stamps[-1]))

        return on_events

    sse = [
        SSEClient(system.port, f"/api/runs/{run_id}/events/", system.token, make(i))
        for i in range(clients)
    ]
    deadline = loop.time() + 120 + lines / 50
    rss_before = rss(system.server_pid)
    gate = asyncio.Semaphore(100)

    async def connect(client: SSEClient) -> None:
        async with gate:
            task = asyncio.create_task(client.run(deadline))
            for _ in range(10_000):
                if client.connected_at or task.done():
                    break
                await asyncio.sleep(0.002)
        await task

    tasks = [asyncio.create_task(connect(c)) for c in sse]
    try:
        t_connect = time.perf_counter()
        for _ in range(60_000):
            if all(ready) or loop.time() > deadline:
                break
            await asyncio.sleep(0.01)
        if not all(ready):
            raise BenchError(f"fan-out: {sum(ready)} of {clients} clients connected")
        connect_seconds = time.perf_counter() - t_connect
        await asyncio.sleep(0.5)
        before = await _hub_stats(http)
        db_before = await asyncio.to_thread(system.db_counter) if system.db_counter else None
        t0 = time.perf_counter()
        response = await http.post(f"/api/runs/{run_id}/input/", json={"data": "go"})
        if response.status_code != 202:
            raise BenchError(f"input: {response.status_code}")
        peak = rss(system.server_pid)
        for _ in range(100_000):
            if all(c.ended for c in sse) or loop.time() > deadline:
                break
            peak = max(peak, rss(system.server_pid))
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
        after = await _hub_stats(http)
        db_after = await asyncio.to_thread(system.db_counter) if system.db_counter else None
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    final = await wait_final(http, run_id)
    complete = sum(
        1
        for c, n in zip(sse, line_counts, strict=True)
        if c.ended and c.gaps == 0 and c.events == c.last_id and n == lines
    )
    return {
        "clients": clients,
        "complete_clients": complete,
        "status": final["status"],
        "connect_seconds": connect_seconds,
        "latency_ms": summary(ms(latencies)),
        "seconds": elapsed,
        "hub_queries_per_s": (after["queries"] - before["queries"]) / elapsed,
        "hub_fetches": after["fetches"] - before["fetches"],
        "catchup_reads": after["catchup_reads"] - before["catchup_reads"],
        "overflows": after["overflows"] - before["overflows"],
        "db_statements_per_s": (db_after - db_before) / elapsed if db_before is not None else None,
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": peak / 2**20,
    }


async def fan_out(system: System, clients: int, lines: int) -> dict:
    async with system.http() as http:
        one = await _fan_out_once(system, http, 1, lines)
        many = await _fan_out_once(system, http, clients, lines)
    ratio = (
        many["hub_queries_per_s"] / one["hub_queries_per_s"] if one["hub_queries_per_s"] else None
    )
    growth = many["rss_peak_mb"] - many["rss_before_mb"]
    return {
        "unit": "queries/s",
        "one": one,
        "many": many,
        "queries_ratio": ratio,
        "rss_growth_mb": growth,
        "target": (
            "all clients get every event; queries/s <= 1.10 x one client; RSS growth <= 100 MB"
        ),
        "met": many["complete_clients"] == clients
        and ratio is not None
        and ratio <= 1.10
        and growth <= 100,
    }


# --- memory ---


async def memory(system: System, count: int, width: int) -> dict:
    """A child prints count x width bytes; supervisor and web RSS before, peak and after."""
    pids = {"worker": system.worker_pid, "web": system.server_pid}
    async with system.http() as http:
        # Warm up both processes (imports, connections, the hub) before "before".
        run = await start_run(http, "numbered", {"count": "1000", "width": str(width)})
        warm = SSEClient(system.port, f"/api/runs/{run['id']}/events/", system.token, NumberCheck())
        await warm.run(asyncio.get_running_loop().time() + 60)
        await wait_final(http, run["id"])
    await asyncio.sleep(1)
    before = {name: rss(pid) for name, pid in pids.items()}
    peak = dict(before)
    check = NumberCheck()
    async with system.http() as http:
        t0 = time.perf_counter()
        run = await start_run(http, "numbered", {"count": str(count), "width": str(width)})
        client = SSEClient(system.port, f"/api/runs/{run['id']}/events/", system.token, check)
        reader = asyncio.create_task(client.run(asyncio.get_running_loop().time() + 300))
        for _ in range(100_000):
            if reader.done():
                break
            for name, pid in pids.items():
                peak[name] = max(peak[name], rss(pid))
            await asyncio.sleep(0.1)
        await reader
        seconds = time.perf_counter() - t0
        await wait_final(http, run["id"])
    await asyncio.sleep(2)
    after = {name: rss(pid) for name, pid in pids.items()}
    mb = 2**20
    out = {
        "unit": "MB",
        "bytes_printed": count * width,
        "seconds": seconds,
        "missing": count - (check.next - 1) + check.bad,
        "target": "supervisor and web RSS at their peak during the flood within +50 MB of before",
    }
    met = out["missing"] == 0
    for name in pids:
        peak_change = (peak[name] - before[name]) / mb
        out[name] = {
            "before_mb": before[name] / mb,
            "peak_mb": peak[name] / mb,
            "after_mb": after[name] / mb,
            "peak_change_mb": peak_change,
            "change_mb": (after[name] - before[name]) / mb,
        }
        # "Flat while a child prints 1 GB": judged at the peak, not after it.
        met = met and peak_change <= 50
    out["met"] = met
    return out


# --- the run page in headless Chromium, during a flood ---

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OBSERVER = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push([entry.startTime, entry.duration]);
}).observe({type: "longtask", buffered: true});
"""


def _write_js_profile(profile: dict, system: System) -> None:
    """Self time per JavaScript function of the page during the flood (CDP Profiler)."""
    import json
    from collections import Counter
    from pathlib import Path

    deltas = profile.get("timeDeltas") or []
    by_node = Counter()
    for node_id, delta in zip(profile.get("samples") or [], deltas, strict=False):
        by_node[node_id] += delta
    names = {}
    for node in profile["nodes"]:
        frame = node["callFrame"]
        where = frame.get("url", "").rsplit("/", 1)[-1]
        names[node["id"]] = (
            f"{frame.get('functionName') or '(anonymous)'} {where}:{frame.get('lineNumber', 0) + 1}"
        )
    total = sum(by_node.values()) or 1
    own = Counter()
    for node_id, micros in by_node.items():
        own[names.get(node_id, "?")] += micros
    top = [(name, round(100 * micros / total, 1)) for name, micros in own.most_common(30)]
    path = Path(system.profile_dir) / f"{system.vendor}-run-page.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"self_percent": top}, indent=1))


async def run_page(system: System, rate: int, seconds: float) -> dict:
    """Long tasks and errors of the run page `/runs/<id>/` while its run floods."""
    from playwright.async_api import async_playwright

    if not os.path.exists(CHROMIUM):
        return {"skipped": f"no Chromium at {CHROMIUM}", "met": None}
    async with system.http() as http, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1360, "height": 900})
            await context.add_cookies(
                [{"name": "sessionid", "value": system.session_cookie, "url": system.base}]
            )
            await context.add_init_script(OBSERVER)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on(
                "console",
                lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"),
            )
            run = await start_run(
                http, "rate", {"rate": str(rate), "seconds": str(seconds), "wait": "wait"}
            )
            run = await wait_status(http, run["id"], "running")
            response = await page.goto(f"{system.base}/runs/{run['id']}/")
            if response is None or response.status != 200:
                raise BenchError(f"run page: {response.status if response else 'no answer'}")
            if "/runs/" not in page.url:
                raise BenchError(f"run page: landed on {page.url} (not logged in?)")
            await page.wait_for_timeout(1500)
            # The observer works: a 120 ms busy loop must show as a long task.
            await page.evaluate(
                "() => new Promise(r => setTimeout(() => {"
                " const t = performance.now(); while (performance.now() - t < 120) {} r(); }, 0))"
            )
            await page.wait_for_timeout(300)
            load_tasks = await page.evaluate("window.__longTasks.splice(0)")
            observer_ok = any(d >= 100 for _, d in load_tasks)
            cdp = None
            if system.profile_dir:
                cdp = await context.new_cdp_session(page)
                await cdp.send("Profiler.enable")
                await cdp.send("Profiler.setSamplingInterval", {"interval": 500})
                await cdp.send("Profiler.start")
            t0 = await page.evaluate("performance.now()")
            await http.post(f"/api/runs/{run['id']}/input/", json={"data": "go"})
            await wait_final(http, run["id"], timeout=seconds + 60)
            await page.wait_for_timeout(1000)
            if cdp is not None:
                profile = (await cdp.send("Profiler.stop"))["profile"]
                _write_js_profile(profile, system)
            tasks = await page.evaluate("window.__longTasks")
            t1 = await page.evaluate("performance.now()")
            shown = await page.evaluate(
                "() => [document.querySelector('[data-log-info]')?.textContent,"
                " document.getElementById('run-page')?.dataset.status]"
            )
        finally:
            await browser.close()
    durations = [d for start, d in tasks if t0 <= start <= t1]
    over = [d for d in durations if d > 50]
    return {
        "unit": "ms",
        "lines": int(rate * seconds),
        "long_tasks": len(durations),
        "long_tasks_over_50ms": len(over),
        "longest_ms": max(durations) if durations else 0.0,
        "page_load_long_tasks": len(load_tasks) - (1 if observer_ok else 0),
        "observer_checked": observer_ok,
        "page_log_info": shown[0],
        "page_status": shown[1],
        "page_errors": len(errors),
        "page_error_examples": errors[:5],
        "target": "no long task over 50 ms during the flood, no page error",
        "met": observer_ok and not over and not errors,
    }
