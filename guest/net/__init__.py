"""Guest-side toolkit for network experiments: Mininet topologies, iperf3 traffic, scheme wrappers."""
