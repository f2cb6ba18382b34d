"""Helpers shared by the tests and the benchmarks: real processes (`procs`) and generated images
(`images`). They live outside `tests/` because the benchmarks ship in the services image, which
has no tests, and they know nothing of pytest (pytest fixtures stay in `tests/`)."""
