"""Experiment definitions (one data file each), traffic generators and the experiment drivers."""
