"""Summarise py-spy collapsed stacks (`--format raw`): where the samples go.

`python -m bench.profile_top FILE [N]` prints the functions with the most
samples, inclusive (on the stack) and self (at the top of the stack).
"""

import sys
from collections import Counter


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            n = int(count)
            total += n
            frames = stack.split(";")
            for frame in set(frames):
                inclusive[frame] += n
            own[frames[-1]] += n
    print(f"{total} samples in {path}")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / total:5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main()
