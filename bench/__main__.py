"""`python -m bench [--quick] [--backend sqlite|postgres|both] [--only FIGURES]`.

Runs each backend's benchmark in a process of its own (`bench.backend`), each
with a fresh database, then prints the table and writes
bench/results/<backend>.json and bench/RESULTS.md (quick mode:
bench/results/<backend>-quick.json and bench/RESULTS-quick.md, so that a quick
check never replaces the full results the README shows).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Seconds each backend's figures may take (the set-up comes on top); the
# whole run stays under 2 minutes (quick) or 10 minutes (full) on 2 cores.
BUDGET = {"quick": 50.0, "full": 260.0}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a subset, smaller and faster")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated: "
        + ",".join(["start", "log", "throughput", "control", "fanout", "memory", "run_page"]),
    )
    parser.add_argument("--profile", default="", help="directory for py-spy stacks per figure")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="only rebuild RESULTS.md (and print the tables) from bench/results/*.json",
    )
    opts = parser.parse_args()
    if opts.rewrite:
        return rewrite()
    mode = "quick" if opts.quick else "full"
    suffix = "-quick" if opts.quick else ""
    backends = ["sqlite", "postgres"] if opts.backend == "both" else [opts.backend]
    RESULTS.mkdir(exist_ok=True)
    reports = {}
    started = time.monotonic()
    for backend in backends:
        out = RESULTS / f"{backend}.json.tmp"
        out.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "bench.backend",
            backend,
            "--out",
            str(out),
            "--budget",
            str(BUDGET[mode]),
        ]
        if opts.quick:
            argv.append("--quick")
        if opts.only:
            argv += ["--only", opts.only]
        if opts.profile:
            argv += ["--profile", opts.profile]
        print(f"{backend}: {mode} benchmark ...", flush=True)
        proc = subprocess.Popen(argv, start_new_session=True)
        try:
            proc.wait(timeout=BUDGET[mode] + 120)
        except subprocess.TimeoutExpired:
            print(f"{backend}: over its time limit; stopping it", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
            raise
        if proc.returncode != 0 or not out.exists():
            print(f"{backend}: failed (exit {proc.returncode})", file=sys.stderr)
            continue
        reports[backend] = json.loads(out.read_text())
        if opts.no_write:
            out.unlink()
        else:
            out.replace(RESULTS / f"{backend}{suffix}.json")
    for backend, data in reports.items():
        print(f"\n{backend} ({data['machine']['database']}), {mode}, {data['seconds']:.0f} s:")
        print(report.text_table(data["figures"]))
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if reports and not opts.no_write and not opts.only and len(reports) == 2:
        command = "make bench-quick" if opts.quick else "make bench"
        (HERE / f"RESULTS{suffix}.md").write_text(report.markdown(reports, command))
        print(f"wrote {HERE / f'RESULTS{suffix}.md'} and {RESULTS}/<backend>{suffix}.json")
    return 0 if len(reports) == len(backends) else 1


def rewrite() -> int:
    reports = {
        backend: json.loads((RESULTS / f"{backend}.json").read_text())
        for backend in ("sqlite", "postgres")
        if (RESULTS / f"{backend}.json").exists()
    }
    if not reports:
        print("no results in bench/results/", file=sys.stderr)
        return 1
    for backend, data in reports.items():
        print(f"\n{backend} ({data['machine']['database']}), {data['mode']}:")
        print(report.text_table(data["figures"]))
    mode = next(iter(reports.values()))["mode"]
    command = "make bench-quick" if mode == "quick" else "make bench"
    (HERE / "RESULTS.md").write_text(report.markdown(reports, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
