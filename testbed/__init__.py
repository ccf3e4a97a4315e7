"""Hosts, guest topologies, the experiment runner and the results store."""
