"""Experiments of many runs: both stages in a row, seeds, sweeps, raw vs stage-1 features."""
