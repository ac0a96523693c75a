"""psylens benchmarks: `make bench`."""
