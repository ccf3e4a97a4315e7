"""The harness's machine side: kernel specs, build roots for out-of-tree modules, guest images,
QEMU launch and the accelerator probe.

Modules are compiled on the host inside a cached Debian root that holds the exact headers and gcc
of the target kernel (``vm.buildroot``); which kernels exist is decided in ``vm.kernels``.
"""
