"""The `orrery` command line, the run driver, sweeps and reports."""
