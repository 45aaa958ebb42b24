"""The benchmark: `make bench` (full) and `make bench-quick` (a subset).

Each figure is measured on SQLite and on PostgreSQL against the real system
(uvicorn, the supervisor, real children, a real HTTP client reading SSE),
next to a floor measured in the same run on the same machine. See
bench/RESULTS.md for the latest table and what each figure means.
"""
