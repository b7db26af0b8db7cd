"""Helpers the tests and `bench/` share, one concept per module.

`environment` (what a child process inherits), `waiting` (bounded polls), `processes`
(process groups started and stopped by PID), `servers` (servers on a socket that listens
before they start), `cli` (the `wabahook` command as a child process), `postgres` (an
embedded PostgreSQL for the length of a run) and `databases` (one-shot SQL, databases made
and dropped on a server). Nothing here imports pytest: `bench/` runs without it.
"""
