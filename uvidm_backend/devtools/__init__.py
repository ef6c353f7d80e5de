"""Tools for developers and tests: tiny configurations and model folders with random weights."""
