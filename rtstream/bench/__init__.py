"""Benchmarks behind ``rtstream bench``: CPU cost of the data path, measured in-process."""
