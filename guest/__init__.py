"""The guest side of the testbed: drivers that run inside the QEMU guest, as root.

They run from the read-only 9p share of this checkout with the guest's venv, one entry point for
all (`python -m guest.driver NAME PLAN.json`, see guest/driver.py). Nothing here may import the
host side (`testbed`, `vm`, `workloads`): the guest has no cache, no build roots and no VM.
"""
