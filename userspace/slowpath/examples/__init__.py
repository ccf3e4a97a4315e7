"""Example adapters for the slow path."""
