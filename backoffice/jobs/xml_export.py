"""Export the product catalogue as one (possibly huge) XML file.

    python backoffice/jobs/xml_export.py --rows 2000000 --region eu

Rows are generated (a stand-in for a big database query) and written as they
are made, in blocks, so memory stays flat whatever `--rows` is: two million
rows make about 600 MB. The file is written under a temporary name and renamed
at the end, so a reader never sees half an export; an aborted export leaves
nothing behind. Reports `::progress` as it goes.

Run by the task runner, it writes `feeds/catalogue-<region>.xml` in the run's
own `TASKRUNNER_ARTIFACTS_DIR`, publishes it with `::artifact` once complete
(staff can download it from the run page while the run ends), and its
`::result` names the artifact, its size in bytes and the number of rows.
Elsewhere it writes to `--out-dir` (`XML_EXPORT_DIR`, default var/exports/)
and its result gives the path.
"""

import argparse
import os
import random
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[2]
if not __package__:  # run as a file, not with -m: make the project importable
    sys.path.insert(0, str(ROOT))

from taskrunner import child  # noqa: E402

DEFAULT_DIR = ROOT / "var" / "exports"
BLOCK_ROWS = 2000  # rows joined per write: few syscalls, bounded memory
PROGRESS_EVERY = 0.25  # seconds between progress lines
REGIONS = {"eu": ("EUR", "Paris"), "us": ("USD", "Chicago"), "asia": ("JPY", "Osaka")}
WORDS = [
    "steel",
    "cotton",
    "oak",
    "glass",
    "linen",
    "copper",
    "walnut",
    "wool",
    "cedar",
    "brass",
    "ceramic",
    "slate",
    "lamp",
    "chair",
    "table",
    "shelf",
    "rug",
    "vase",
    "clock",
    "mirror",
    "bench",
    "stool",
    "crate",
    "basket",
]


class Stopped(Exception):
    """SIGTERM arrived (the run was aborted): clean up and exit."""


def _on_sigterm(signum, frame):
    raise Stopped


def product(rng: random.Random, number: int, region: str, epoch: datetime) -> str:
    currency, warehouse = REGIONS[region]
    name = " ".join(rng.choice(WORDS) for _ in range(3)).title()
    updated = epoch + timedelta(seconds=rng.randrange(0, 365 * 86400))
    return (
        f'  <product id="{number}" sku="{region.upper()}-{number:09d}">\n'
        f"    <name>{escape(name)} &amp; Co</name>\n"
        f'    <price currency="{currency}">{rng.randrange(100, 500000) / 100:.2f}</price>\n'
        f'    <stock warehouse="{warehouse}">{rng.randrange(0, 5000)}</stock>\n'
        f"    <updated>{updated.strftime('%Y-%m-%dT%H:%M:%SZ')}</updated>\n"
        f"  </product>\n"
    )


def export(path: Path, rows: int, region: str, seed: int) -> int:
    """Write the document to `path`; return its size in bytes."""
    rng = random.Random(seed)
    epoch = datetime(2025, 1, 1, tzinfo=UTC)
    last_report = 0.0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write(f'<catalogue region="{region}" rows="{rows}">\n')
        for start in range(0, rows, BLOCK_ROWS):
            stop = min(rows, start + BLOCK_ROWS)
            out.write("".join(product(rng, n, region, epoch) for n in range(start + 1, stop + 1)))
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY or stop == rows:
                last_report = now
                child.progress(stop, rows, f"{stop:,} of {rows:,} rows")
        out.write("</catalogue>\n")
    return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--region", choices=sorted(REGIONS), default="eu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out-dir", type=Path, default=Path(os.environ.get("XML_EXPORT_DIR") or DEFAULT_DIR)
    )
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows cannot be negative")
    artifacts_dir = child.artifacts_dir()
    if artifacts_dir is not None:
        # The run's own directory: a plain name, kept as the run's artifact.
        artifact = f"feeds/catalogue-{args.region}.xml"
        final = artifacts_dir / artifact
    else:
        artifact = None
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = f"catalogue-{args.region}-{stamp}-run{child.run_id() or os.getpid()}.xml"
        final = args.out_dir / name
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.parent / f".{final.name}.partial"
    signal.signal(signal.SIGTERM, _on_sigterm)
    print(f"exporting {args.rows:,} rows for region {args.region} to {final}")
    started = time.monotonic()
    try:
        size = export(partial, args.rows, args.region, args.seed)
        partial.rename(final)
    except Stopped:
        print("stopped: removing the partial file", file=sys.stderr)
        partial.unlink(missing_ok=True)
        return 143
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    elapsed = time.monotonic() - started
    print(f"wrote {size:,} bytes in {elapsed:.1f} s")
    if artifact is not None:
        child.artifact(artifact)  # complete: keep it now, downloadable at once
        child.result({"artifact": artifact, "size_bytes": size, "rows": args.rows})
    else:
        child.result({"path": str(final), "size_bytes": size, "rows": args.rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
