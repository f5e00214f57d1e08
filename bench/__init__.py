"""qtriton's benchmarks: `python -m bench --help` from the repository root (not shipped in the wheel)."""
