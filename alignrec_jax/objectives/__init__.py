"""The loss terms several models share (losses.py): pure, keyword-only, masked."""
