"""The event store: a run's events, log lines packed many to a row.

`store` owns the table (append, read a range of seqs, read backwards, prune);
`payloads` builds each event's JSON payload, the one place that does.
"""
