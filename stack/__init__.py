"""The local stack: every service as a child process (`genir up`, `genir demo`, tritonserver)."""
