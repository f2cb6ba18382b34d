"""`make bench`: each benchmarks/bench_<name>.py exposes run(quick: bool) -> dict (see record())."""
