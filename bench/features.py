"""`python -m bench.features [--quick]`: the figures of the features, after the engine's.

Each feature has a benchmark of its own (a real worker, uvicorn and children
in a fresh database), run here one after another as a process each, bounded
in time; each prints one JSON object. This writes them to
bench/results/features.json (quick: features-quick.json) and appends a
section to bench/RESULTS.md. `make bench` runs it after `python -m bench`.

- bench.schedules: a due time -> its child started (p99 <= 1 s); 1,000 idle
  schedules (< 1% of a core); a live run's log during a prune (p99 <= 25 ms).
- bench.artifacts: keeping a 1 GB artifact (>= 0.5x cp, worker RSS <= +50 MB);
  downloading it through uvicorn (>= 200 MB/s, web RSS <= +50 MB).
- bench.djangotasks: enqueue -> the first line at an SSE client, warm and cold
  (warm p50 <= 100 ms); 100 tasks at once (all SUCCESSFUL, tasks/s).
- bench.hosts (root: namespaces): control across hosts (p99 <= floor + 10 ms);
  a host lost (<= dead_after + a heartbeat); PostgreSQL restarted during a
  flood (0 lines missing or repeated).
- bench.load: 100 runs x 200 lines/s across two workers, 200 SSE viewers on one
  web process, 60 s (log latency p99 <= 100 ms; 0 lines missing or repeated,
  stored or delivered; web and worker RSS growth <= 100 MB each).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def plans(quick: bool) -> list[tuple[str, list[str], float]]:
    """(name, argv, seconds allowed) of each feature benchmark."""
    py = sys.executable
    prune_runs = "10000" if quick else "100000"
    return [
        ("schedules (SQLite)", [py, "-m", "bench.schedules", "--runs", prune_runs], 400),
        (
            "schedules (PostgreSQL)",
            ["env", f"DATABASE_URL={PG_URL}", py, "-m", "bench.schedules", "--runs", prune_runs],
            900,  # pruning 100,000 runs twice takes about 6 minutes on PostgreSQL
        ),
        ("artifacts", [py, "-m", "bench.artifacts", "--size-mb", "128" if quick else "1024"], 300),
        ("django tasks (SQLite)", [py, "-m", "bench.djangotasks", "sqlite"], 300),
        ("django tasks (PostgreSQL)", [py, "-m", "bench.djangotasks", "postgres"], 300),
        (
            "load (SQLite)",
            [
                py,
                "-m",
                "bench.load",
                "sqlite",
                *(["--runs", "20", "--viewers", "40", "--seconds", "10"] * quick),
            ],
            400,
        ),
        (
            "load (PostgreSQL)",
            [
                py,
                "-m",
                "bench.load",
                "postgres",
                *(["--runs", "20", "--viewers", "40", "--seconds", "10"] * quick),
            ],
            400,
        ),
        (
            "several hosts (PostgreSQL)",
            [py, "-m", "bench.hosts", *(["--rounds", "20"] * quick)],
            300,
        ),
    ]


def run(name: str, argv: list[str], seconds: float) -> dict:
    print(f"{name} ...", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"over its {seconds:g} s"}
    took = round(time.monotonic() - started, 1)
    try:
        result = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' / '.join(tail)}", "seconds": took}
    return {**result, "seconds": took}


def markdown(results: dict[str, dict]) -> str:
    lines = ["", "## Feature figures (`python -m bench.features`)", ""]
    for name, result in results.items():
        lines += [f"### {name}", "", "```json", json.dumps(result, indent=2), "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.features", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    opts = parser.parse_args()
    results = {name: run(name, argv, seconds) for name, argv, seconds in plans(opts.quick)}
    suffix = "-quick" if opts.quick else ""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"features{suffix}.json").write_text(json.dumps(results, indent=2))
    report = HERE / f"RESULTS{suffix}.md"
    text = report.read_text() if report.exists() else ""
    text = text.split("\n## Feature figures")[0].rstrip("\n") + "\n"
    report.write_text(text + markdown(results))
    for name, result in results.items():
        print(f"{name}: {json.dumps(result)[:400]}")
    return 0 if not any("error" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
