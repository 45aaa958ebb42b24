"""Start latency: print one line at once, then exit."""

import sys

sys.stdout.write("ready\n")
sys.stdout.flush()
