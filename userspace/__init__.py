"""LiteFlow's user-space side: snapshot toolchain, netlink client, slow-path service."""
