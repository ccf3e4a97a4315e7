"""Utilities shared by every layer of the testbed (cache locations, subprocess helpers)."""
