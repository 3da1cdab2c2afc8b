"""Losses: the shared terms, stage 2's objectives (with its models by name), stage 1's."""
