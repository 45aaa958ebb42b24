"""Crawl a generated web site, forever, until aborted.

    python backoffice/jobs/crawler.py --rate 5 --depth 5

No network: the site is a synthetic tree of pages, each page's links derived
from its path. Fetching is done by a helper process of the crawler's own (a
"fetcher", this same file with `--fetcher`), spoken to over a pipe, so pausing
or aborting the run must reach a grandchild too.

One line is printed per page, at `--rate` pages per second. When the whole
site has been crawled, a new round starts (a crawler keeps its index fresh);
`::progress` tells how far the current round is. SIGTERM (abort) stops it at
once, whatever it was waiting for.

Commands, one per line on standard input, each answered on standard output:
    slower   halve the rate
    faster   double the rate
    status   print the crawler's state (also sent as a `status` message)
"""

import argparse
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run as a file, not with -m: make the project importable
    sys.path.insert(0, str(ROOT))

from taskrunner import child  # noqa: E402

MIN_RATE, MAX_RATE = 0.25, 500.0
FRONTIER_LIMIT = 10_000  # links kept waiting; more are dropped (a crawl budget)
PROGRESS_EVERY = 1.0  # seconds
SECTIONS = ("products", "blog", "help", "stores", "careers", "press")


# --- the synthetic site (used by the fetcher) --------------------------------


def page_links(path: str, max_depth: int) -> list[str]:
    """The links of a page: a stable function of its path, forming a tree."""
    if path == "/":
        return [f"/{section}/" for section in SECTIONS]
    digest = hashlib.sha256(path.encode()).digest()
    depth = path.rstrip("/").count("/")
    count = 0 if depth >= max_depth else 2 + digest[0] % 4
    return [f"{path}{digest[i + 1] % 97}-{i}/" for i in range(count)]


def site_size(max_depth: int) -> int:
    """How many pages the site has (the total of a round's progress)."""
    pending, count = ["/"], 0
    while pending:
        count += 1
        pending.extend(page_links(pending.pop(), max_depth))
    return count


def fetch(path: str, max_depth: int) -> dict:
    links = page_links(path, max_depth)
    size = 2000 + int.from_bytes(hashlib.sha256(path.encode()).digest()[:2]) % 30000
    return {"path": path, "status": 200, "bytes": size, "links": links}


def fetcher_main(max_depth: int) -> int:
    """The helper process: one path per line in, one JSON answer per line out."""
    # Its parent talks to it over pipes; it dies with them (EOF), and takes
    # SIGTERM's default action (exit) like the rest of the run's group.
    for line in sys.stdin:
        path = line.strip()
        if path:
            sys.stdout.write(json.dumps(fetch(path, max_depth)) + "\n")
            sys.stdout.flush()
    return 0


# --- the crawler --------------------------------------------------------------


class Fetcher:
    """The grandchild process and the pipe to it."""

    def __init__(self, max_depth: int):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--fetcher", "--depth", str(max_depth)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def get(self, path: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fetcher (pid {self.proc.pid}) died")
        return json.loads(answer)

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class Stop(Exception):
    """SIGTERM: the run is being aborted."""


def _on_sigterm(signum, frame):
    # Once is enough: a second SIGTERM (sent to the group and to us) must not
    # interrupt the clean-up that the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop


class Crawler:
    def __init__(self, rate: float, max_depth: int):
        self.rate = rate
        self.site_size = site_size(max_depth)
        self.fetcher = Fetcher(max_depth)
        self.frontier: deque[str] = deque(["/"])
        self.crawled = 0
        self.round = 1
        self.in_round = 0
        self.bytes = 0
        self.dropped = 0
        self.started = time.monotonic()
        self.stdin_open = True
        self.pending_input = b""

    # --- one page -------------------------------------------------------------

    def crawl_one(self) -> None:
        if not self.frontier:
            self.next_round()
        path = self.frontier.popleft()
        page = self.fetcher.get(path)
        self.crawled += 1
        self.in_round += 1
        self.bytes += page["bytes"]
        room = FRONTIER_LIMIT - len(self.frontier)
        self.frontier.extend(page["links"][: max(0, room)])
        self.dropped += max(0, len(page["links"]) - max(0, room))
        print(
            f"crawled {path} ({page['status']}, {page['bytes']} bytes, {len(page['links'])} links)"
        )

    def next_round(self) -> None:
        print(f"round {self.round} done: {self.in_round} pages; starting round {self.round + 1}")
        self.round += 1
        self.in_round = 0
        self.frontier = deque(["/"])

    def report_progress(self) -> None:
        child.progress(self.in_round, self.site_size, f"round {self.round}, {self.rate:g} pages/s")

    # --- commands -------------------------------------------------------------

    def state(self) -> dict:
        return {
            "crawled": self.crawled,
            "round": self.round,
            "rate": self.rate,
            "frontier": len(self.frontier),
            "dropped_links": self.dropped,
            "bytes": self.bytes,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "fetcher_pid": self.fetcher.proc.pid,
        }

    def command(self, word: str) -> None:
        if word == "slower":
            self.rate = max(MIN_RATE, self.rate / 2)
            print(f"ok: rate is now {self.rate:g} pages/s")
        elif word == "faster":
            self.rate = min(MAX_RATE, self.rate * 2)
            print(f"ok: rate is now {self.rate:g} pages/s")
        elif word == "status":
            state = self.state()
            print("status: " + " ".join(f"{k}={v}" for k, v in state.items()))
            child.message("status", state)
        elif word:
            print(f"unknown command {word!r}; try slower, faster or status")

    def read_commands(self, timeout: float) -> None:
        """Wait up to `timeout` for input and act on every whole line that came."""
        if not self.stdin_open:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([sys.stdin.fileno()], [], [], timeout)
        if not ready:
            return
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            self.stdin_open = False  # nobody will send commands any more
            return
        self.pending_input += chunk
        *lines, self.pending_input = self.pending_input.split(b"\n")
        for line in lines:
            self.command(line.decode(errors="replace").strip().lower())

    # --- the loop -------------------------------------------------------------

    def run(self) -> None:
        pid = self.fetcher.proc.pid
        print(f"crawling {self.site_size} generated pages at {self.rate:g}/s (fetcher pid {pid})")
        next_page = time.monotonic()
        next_progress = next_page
        while True:
            now = time.monotonic()
            if now >= next_page:
                self.crawl_one()
                # Paced from the schedule, not from now: the rate holds even
                # when a page takes a while; after a pause it does not burst.
                next_page = max(next_page + 1 / self.rate, now)
            if now >= next_progress:
                self.report_progress()
                next_progress = now + PROGRESS_EVERY
            self.read_commands(max(0.0, min(next_page, next_progress) - time.monotonic()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="pages per second")
    parser.add_argument("--depth", type=int, default=5, help="how deep the site goes (1-8)")
    parser.add_argument("--fetcher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.depth <= 8:
        parser.error("--depth must be between 1 and 8")
    if args.fetcher:
        return fetcher_main(args.depth)
    if not MIN_RATE <= args.rate <= MAX_RATE:
        parser.error(f"--rate must be between {MIN_RATE:g} and {MAX_RATE:g}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    crawler = Crawler(args.rate, args.depth)
    code = 0
    try:
        crawler.run()
    except Stop:
        code = 143  # the conventional code of "ended by SIGTERM"
    except KeyboardInterrupt:
        code = 130
    finally:
        crawler.fetcher.close()
    print(f"stopped after {crawler.crawled} pages")
    return code


if __name__ == "__main__":
    sys.exit(main())
