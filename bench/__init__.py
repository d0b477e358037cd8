"""brainview's benchmarks (`make bench`, `make bench-quick`); see bench/run_all.py.

Not installed with the package: they run from a checkout, on generated data in
a temporary folder, and write their results to bench/results/.
"""
