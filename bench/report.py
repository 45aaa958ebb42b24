"""The table: printed on the terminal and written as bench/RESULTS.md."""

MEANINGS = [
    (
        "start latency",
        "`POST /api/tasks/{name}/runs/` until the child's first line reaches an SSE client "
        "(bearer token, stream opened as soon as the 202 arrives). Floor: the bench spawns the "
        "same child itself (own session, stdout pipe) and reads its first line. "
        "Target: median <= floor + 15 ms.",
    ),
    (
        "log latency",
        "A child prints a `time.time()` stamp every 20 ms; receive time at the SSE client minus "
        "the stamp, for every line printed after the stream was open. No floor (absolute). "
        "Target: median <= 10 ms, p99 <= 25 ms.",
    ),
    (
        "polling baseline",
        "The same run watched the seed's way: `GET /api/runs/{id}/` every 2 s (the child also "
        "reports each stamp as `::progress`); each line counts as seen at the first poll that "
        "shows it. The number SSE has to beat by two orders of magnitude.",
    ),
    (
        "pipe round trip",
        "During the log-latency run, the bench writes a byte to a child that echoes it back, "
        "every 20 ms: two cross-process wake-ups, what each hop of the log path (child, "
        "supervisor, database, hub, client) costs on this machine at that moment.",
    ),
    (
        "where the time goes",
        "Start latency split with the run's own timestamps (1 ms resolution): web (POST sent "
        "until the run row is created), claim (until the supervisor's `started_at`), child "
        "(until the supervisor read its first line: spawn and interpreter start, what the "
        "floor measures), delivery (until the SSE client has it). "
        "Log latency split at the event's `ts` (when the supervisor read the line, 1 ms "
        "resolution): child -> supervisor, then supervisor -> SSE client (batch stored and "
        "committed, hub woken, fetch, encode, send). Control latency split at the request's "
        "`RunAction.at` (when the web process recorded it, read back from the database) and "
        "the first process of the tree seen in the new state (the group signal).",
    ),
    (
        "throughput",
        "A child prints N numbered lines as fast as it can (64 KiB writes); lines per second "
        "from the POST until the SSE client has the last one, every line checked present, once, "
        "in order. Floor: the same child read straight from a pipe. Target: >= 250,000 lines/s "
        "and 0 missing. Database growth: the bytes the database grew during the largest trial "
        "(SQLite: the file plus its WAL after `PRAGMA wal_checkpoint(TRUNCATE)`; PostgreSQL: "
        "`pg_total_relation_size` of the events table), against the log's raw bytes (every "
        "line and its newline). Target: <= 1.5x.",
    ),
    (
        "control latency",
        "A child with a grandchild in its group and one that left it with `setsid()`: "
        "`POST .../pause/`, `.../resume/`, `.../abort/` until psutil sees every process stopped, "
        "running, or gone (zombies count as gone). Floor: the bench signals the same tree itself "
        "(`os.killpg` plus the escapee). Target: p99 <= floor p99 + 10 ms.",
    ),
    (
        "fan-out",
        "N SSE clients (raw asyncio sockets) on one run on one uvicorn process while the child "
        "prints 50 lines/s, against 1 client: every client must get every event (contiguous ids, "
        "all lines, the `end`); the hub's database queries per second (its own counter, "
        "`/api/debug/hub/`; PostgreSQL's xact_commit too) within 10% of the 1-client figure; "
        "server RSS growth <= 100 MB. Also reported: the time until all N clients are connected "
        "and have the run's first line (`ready`), and the latency the clients see (receive time "
        "minus the printed time of the newest line of each read, every client), against 1 client.",
    ),
    (
        "memory",
        "A child prints a lot (2,000-byte lines) while an SSE client reads the whole run; RSS "
        "of the supervisor and of the web process before, at the peak during the flood (sampled "
        "every 0.1 s), and 2 s after the run. The figure is the peak minus before. "
        "Target: peak within +50 MB of before, 0 lines missing.",
    ),
    (
        "run page",
        "Headless Chromium on the run page `/runs/<id>/` (staff session) while its child prints "
        "10,000 lines/s; long tasks seen by a PerformanceObserver during the flood (the observer "
        "is checked first with a 120 ms busy loop), and page errors (uncaught exceptions and "
        "console errors, a failed request included). Target: no long task over 50 ms, no error.",
    ),
    (
        "warm-up",
        "Dropped, never counted: start latency runs one `first-line` run before its trials "
        "(imports, connections and the hub warmed); memory runs a 1,000-line run read by an "
        "SSE client before it takes `before`. Every other figure counts every trial.",
    ),
]


def _f(value, digits=1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _mark(met) -> str:
    return {True: "met", False: "**missed**", None: "–"}[met]


def _from_older_runs(figures: dict) -> dict:
    """Results written before the figures were renamed and rejudged, read as today's.

    The run page was called "dashboard"; memory was judged 2 s after the flood
    (its peak was stored, and is what is judged now); page errors were a list.
    """
    figures = dict(figures)
    if "run_page" not in figures and "dashboard" in figures:
        figures["run_page"] = figures.pop("dashboard")
    page = figures.get("run_page")
    if page and isinstance(page.get("page_errors"), list):
        page = figures["run_page"] = dict(page, page_errors=len(page["page_errors"]))
        page["met"] = page["met"] and not page["page_errors"]
    mem = figures.get("memory")
    if mem and "error" not in mem and "peak_change_mb" not in mem.get("worker", {}):
        mem = figures["memory"] = dict(mem)
        met = mem["missing"] == 0
        for role in ("worker", "web"):
            r = mem[role] = dict(mem[role])
            r["peak_change_mb"] = r["peak_mb"] - r["before_mb"]
            met = met and r["peak_change_mb"] <= 50
        mem["met"] = met
    return figures


def rows(figures: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, median, p99, floor median / p99, ratio, target and verdict) per line."""
    out = []
    figures = _from_older_runs(figures)

    def error(name: str) -> bool:
        fig = figures.get(name)
        if fig is None:
            return True
        if "error" in fig:
            out.append((name, "–", "–", "–", "–", f"error: {fig['error'][:80]}"))
            return True
        return False

    if not error("start"):
        f = figures["start"]
        m, fl = f["measured"], f["floor"]
        out.append(
            (
                "start latency (ms)",
                _f(m["median"]),
                _f(m["p99"]),
                f"{_f(fl['median'])} / {_f(fl['p99'])}",
                f"{f['ratio']:.2f}x (+{_f(f['overhead_median'])} ms)",
                f"<= floor + 15 ms: {_mark(f['met'])}",
            )
        )
        parts = f.get("parts") or {}
        if all((parts.get(k) or {}).get("median") is not None for k in ("web", "claim")):
            out.append(
                (
                    "  web / claim / child / delivery (ms)",
                    " / ".join(_f(parts[k]["median"]) for k in parts),
                    " / ".join(_f(parts[k]["p99"]) for k in parts),
                    "–",
                    "–",
                    "where the time goes",
                )
            )
    if not error("log"):
        f = figures["log"]
        m = f["measured"]
        out.append(
            (
                "log latency (ms)",
                _f(m["median"]),
                _f(m["p99"]),
                "none",
                "–",
                f"p50 <= 10, p99 <= 25: {_mark(f['met'])}",
            )
        )
        p = f.get("polling")
        if p:
            out.append(
                (
                    "  polling every 2 s (ms)",
                    _f(p["median"]),
                    _f(p["p99"]),
                    "–",
                    f"{f['polling_vs_sse']:.0f}x SSE" if f.get("polling_vs_sse") else "–",
                    "baseline",
                )
            )
        for key, title in (
            ("child_to_supervisor", "  child -> supervisor read (ms)"),
            ("supervisor_to_client", "  supervisor read -> SSE client (ms)"),
        ):
            r = f.get(key)
            if r and r.get("n"):
                out.append((title, _f(r["median"]), _f(r["p99"]), "–", "–", "where the time goes"))
        r = f.get("pipe_round_trip")
        if r and r.get("n"):
            out.append(
                (
                    "  pipe round trip, same time (ms)",
                    _f(r["median"], 2),
                    _f(r["p99"], 2),
                    "–",
                    "–",
                    "context: 2 wake-ups",
                )
            )
    if not error("throughput"):
        f = figures["throughput"]
        m, fl = f["measured"], f["floor"]
        out.append(
            (
                f"throughput ({f['lines']:,} lines, lines/s)",
                _f(m["median"]),
                f"min {_f(m['min'])}",
                f"{_f(fl['median'])}",
                f"{f['ratio']:.2f}x",
                f">= 250,000, {f['missing']} missing: {_mark(f['met'])}",
            )
        )
        g = f.get("db_growth")
        if g:
            out.append(
                (
                    "  database growth for that flood (MB)",
                    _f(g["bytes"] / 1e6, 2),
                    "largest trial",
                    f"log {_f(g['raw_bytes'] / 1e6, 2)}",
                    f"{g['ratio']:.2f}x",
                    f"<= 1.5x the log: {_mark(g['met'])}",
                )
            )
    if not error("control"):
        f = figures["control"]
        for action, a in f["actions"].items():
            m, fl = a["measured"], a["floor"]
            out.append(
                (
                    f"control: {action} (ms)",
                    _f(m["median"]),
                    _f(m["p99"]),
                    f"{_f(fl['median'], 2)} / {_f(fl['p99'], 2)}",
                    f"+{_f(m['p99'] - fl['p99'])} ms at p99",
                    f"p99 <= floor + 10 ms: {_mark(a['met'])}",
                )
            )
            rec, first = a.get("recorded_by_web") or {}, a.get("first_process") or {}
            if rec.get("median") is not None and first.get("median") is not None:
                out.append(
                    (
                        "  web recorded it / first process (ms)",
                        f"{_f(rec['median'])} / {_f(first['median'])}",
                        f"{_f(rec['p99'])} / {_f(first['p99'])}",
                        "–",
                        "–",
                        "where the time goes",
                    )
                )
    if not error("fanout"):
        f = figures["fanout"]
        one, many = f["one"], f["many"]
        out.append(
            (
                f"fan-out: {many['clients']} clients, hub queries/s",
                _f(many["hub_queries_per_s"]),
                f"{many['complete_clients']}/{many['clients']} complete",
                f"1 client: {_f(one['hub_queries_per_s'])}",
                f"{f['queries_ratio']:.2f}x" if f["queries_ratio"] is not None else "–",
                f"<= 1.10x, all complete: {_mark(f['met'])}",
            )
        )
        if many.get("db_statements_per_s") is not None:
            out.append(
                (
                    "  database transactions/s (pg_stat)",
                    _f(many["db_statements_per_s"]),
                    "–",
                    f"1 client: {_f(one['db_statements_per_s'])}",
                    f"{many['db_statements_per_s'] / one['db_statements_per_s']:.2f}x"
                    if one["db_statements_per_s"]
                    else "–",
                    "includes the worker's",
                )
            )
        out.append(
            (
                f"  connect {many['clients']} clients (s)",
                _f(many["connect_seconds"], 2),
                "–",
                f"1 client: {_f(one['connect_seconds'], 2)}",
                "–",
                "all connected, first line read",
            )
        )
        lat, lat_one = many.get("latency_ms") or {}, one.get("latency_ms") or {}
        if lat.get("median") is None:
            out.append(
                (
                    f"  latency at {many['clients']} clients (ms)",
                    "–",
                    "–",
                    "–",
                    "–",
                    "not measured in this run",
                )
            )
        else:
            out.append(
                (
                    f"  latency at {many['clients']} clients (ms)",
                    _f(lat["median"]),
                    _f(lat["p99"]),
                    f"1 client: {_f(lat_one.get('median'))} / {_f(lat_one.get('p99'))}",
                    "–",
                    "printed -> every client",
                )
            )
        out.append(
            (
                "  server RSS growth (MB)",
                _f(f["rss_growth_mb"]),
                f"peak {_f(many['rss_peak_mb'])}",
                f"before {_f(many['rss_before_mb'])}",
                "–",
                "<= 100 MB",
            )
        )
    if not error("memory"):
        f = figures["memory"]
        for role, title in (("worker", "supervisor"), ("web", "web")):
            r = f[role]
            out.append(
                (
                    f"memory: {title} RSS peak - before (MB), {f['bytes_printed'] / 1e9:g} GB "
                    "printed",
                    f"{r['peak_change_mb']:+.1f}",
                    f"after {r['change_mb']:+.1f}",
                    f"before {_f(r['before_mb'])}",
                    "–",
                    f"peak <= +50 MB, {f['missing']} missing: {_mark(f['met'])}",
                )
            )
    if not error("run_page"):
        f = figures["run_page"]
        if "skipped" in f:
            out.append(("run page", "–", "–", "–", "–", f["skipped"]))
        else:
            out.append(
                (
                    f"run page: long tasks > 50 ms ({f['lines']:,} lines)",
                    str(f["long_tasks_over_50ms"]),
                    f"longest {_f(f['longest_ms'])} ms",
                    "–",
                    "–",
                    f"none, {f['page_errors']} page errors: {_mark(f['met'])}",
                )
            )
    return out


HEADER = ("figure", "median", "p99", "floor (median / p99)", "vs floor", "target")


def text_table(figures: dict) -> str:
    lines = [HEADER, *rows(figures)]
    widths = [max(len(row[i]) for row in lines) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in lines
    )


def markdown_table(figures: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows(figures):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def markdown(reports: dict[str, dict], command: str) -> str:
    first = next(iter(reports.values()))
    m = first["machine"]
    databases = ", ".join(r["machine"]["database"] for r in reports.values())
    parts = [
        "# Benchmark results",
        "",
        f"`{command}` ({first['mode']} mode), {first['date']}.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB memory, Linux "
        f"{m['kernel']}, Python {m['python']}, SQLite {m['sqlite']}; databases: {databases}. "
        "The machine is shared: load average at the start of each backend's run is given "
        "below, and every floor was measured in the same run, interleaved with the trials.",
        "",
    ]
    for backend, report in reports.items():
        sizes = report["sizes"]
        parts += [
            f"## {backend} ({report['machine']['database']})",
            "",
            f"{report['seconds']:.0f} s, load average at start "
            f"{', '.join(str(x) for x in report['machine']['load_at_start'])}; trials: start "
            f"{sizes['start_trials']}, log {sizes['log_ticks']} stamps, throughput "
            f"{sizes['throughput_trials']} x {sizes['throughput_lines']:,} lines, control "
            f"{sizes['control_trials']}.",
            "",
            markdown_table(report["figures"]),
            "",
        ]
        problems = report["figures"].get("problems")
        if problems:
            parts += [f"Problems: {'; '.join(problems)}", ""]
    parts += ["## What each figure means", ""]
    for name, text in MEANINGS:
        parts.append(f"- **{name}**: {text}")
    parts += [
        "",
        "Medians and p99 are nearest-rank over the trials (for latencies, over every line or "
        "action measured). Raw numbers: `bench/results/<backend>.json`. Where a target is "
        "missed, by how much, where the time goes (profiles) and what would close it: "
        "`bench/PROFILES.md`.",
        "",
    ]
    return "\n".join(parts)
