"""Talking to a guest over SSH (Fabric/Paramiko) with its host key pinned.

The guest's host key is generated at provision time and its public half stored next to the image
(``ssh_host_ed25519_key.pub``). The client knows only that key and uses paramiko's RejectPolicy:
any other key, or none, is refused. There is no trust on first use.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

# Paramiko logs every failed attempt (e.g. "Error reading SSH protocol banner" while the guest
# boots) with a traceback through logging's last-resort handler; our errors carry the cause.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False  # TensorFlow's absl configures the root logger; keep it out of there


class GuestError(RuntimeError):
    """A step on the guest failed: the command exited non-zero, timed out, or the guest stopped
    answering. ``step`` names what was being done; the message has the output tails."""

    def __init__(self, step: str, message: str, *, exit_code: int | None = None,
                 stdout: str = "", stderr: str = ""):
        parts = [f"guest step '{step}' failed: {message}"]
        for name, text in (("stdout", stdout), ("stderr", stderr)):
            tail = "\n".join(text.strip().splitlines()[-20:])
            if tail:
                parts.append(f"--- {name} (tail) ---\n{tail}")
        super().__init__("\n".join(parts))
        self.step = step
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class HostKeyError(GuestError):
    """The guest presented a host key other than the pinned one (never retried)."""


def read_host_key(pub: str | Path) -> paramiko.PKey:
    """A public key from an OpenSSH ``.pub`` file, or from its line of text ("ssh-ed25519 AAAA…")."""
    text = str(pub)
    if isinstance(pub, Path) or not text.startswith(("ssh-", "ecdsa-")):
        text = Path(pub).read_text()
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"not an OpenSSH public key: {text[:60]!r}")
    return paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1]))


class Guest:
    """One guest reachable at host:port, logged into as `user` with `key`, host key pinned."""

    def __init__(self, host: str, port: int, user: str, key: str | Path,
                 known_host_key: str | Path | paramiko.PKey, *, connect_timeout: float = 10.0):
        self.host = host
        self.port = int(port)
        self.user = user
        self.key = Path(key)
        self.host_key = (known_host_key if isinstance(known_host_key, paramiko.PKey)
                         else read_host_key(known_host_key))
        self.connect_timeout = connect_timeout
        self._conn: Connection | None = None

    @classmethod
    def for_image(cls, image, port: int, host: str = "127.0.0.1") -> Guest:
        """A Guest for a VM booted from `image` (vm.image.Image) with SSH forwarded to `port`."""
        return cls(host, port, "root", image.ssh_key, image.host_key_pub)

    # -- connection ------------------------------------------------------------------------

    def _new_connection(self) -> Connection:
        config = Config(overrides={"load_ssh_configs": False, "run": {"hide": True, "warn": True}})
        conn = Connection(
            self.host, user=self.user, port=self.port, config=config,
            connect_timeout=self.connect_timeout,
            connect_kwargs={"key_filename": [str(self.key)], "look_for_keys": False,
                            "allow_agent": False, "banner_timeout": self.connect_timeout,
                            "auth_timeout": self.connect_timeout},
        )
        client = conn.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.get_host_keys().clear()
        client._system_host_keys.clear()  # noqa: SLF001 - paramiko checks these first
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        client.get_host_keys().add(name, self.host_key.get_name(), self.host_key)
        return conn

    def connect(self, step: str = "ssh connect", attempts: int = 4, backoff_s: float = 3.0) -> Connection:
        """An open connection; a refused or reset handshake (a loaded guest's sshd drops some)
        is retried a few times, a wrong host key never is."""
        if self._conn is not None and self._conn.is_connected:
            return self._conn
        for attempt in range(1, attempts + 1):
            try:
                self._conn = self._open(step)
                return self._conn
            except HostKeyError:
                raise
            except GuestError:
                if attempt == attempts:
                    raise
                time.sleep(backoff_s * attempt)
        raise AssertionError("unreachable")

    def _open(self, step: str) -> Connection:
        conn = self._new_connection()
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(step, f"host key mismatch: the guest offered {exc.key.get_name()} "
                                     f"{exc.key.get_base64()[:24]}…, pinned is "
                                     f"{self.host_key.get_base64()[:24]}…") from exc
        except paramiko.SSHException as exc:
            if "known_hosts" in str(exc):
                raise HostKeyError(step, f"host key not the pinned one: {exc}") from exc
            raise GuestError(step, f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        except (OSError, EOFError) as exc:
            raise GuestError(step, f"cannot connect to {self.host}:{self.port}: {exc!r}") from exc
        return conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_for_ssh(self, timeout: float, *, alive: Callable[[], bool] | None = None,
                     interval: float = 2.0) -> float:
        """Wait until a command runs over SSH; returns the seconds waited.

        `alive` (e.g. "is the qemu pid still there") is polled so a dead VM fails fast. A wrong
        host key fails at once (HostKeyError); anything else is retried until `timeout`.
        """
        started = time.monotonic()
        last = "no attempt"
        while True:
            if alive is not None and not alive():
                raise GuestError("wait for ssh", f"the VM died while waiting for SSH ({last})")
            try:
                self.close()
                self.connect("wait for ssh", attempts=1)  # this loop does its own retrying
                self.run("true", timeout=max(5.0, self.connect_timeout), step="wait for ssh")
                return time.monotonic() - started
            except HostKeyError:
                self.close()
                raise
            except GuestError as exc:
                last = str(exc).splitlines()[0]
                self.close()
            if time.monotonic() - started > timeout:
                raise GuestError("wait for ssh", f"no SSH answer within {timeout:.0f} s ({last})")
            time.sleep(interval)

    # -- commands and files ----------------------------------------------------------------

    def run(self, cmd: str, timeout: float | None = None, step: str | None = None, *,
            check: bool = True):
        """Run `cmd` in the guest; returns the fabric Result (stdout, stderr, exited).

        Raises GuestError naming `step` when the command fails (with check), times out, or the
        guest stops answering.
        """
        step = step or cmd
        conn = self.connect(step)
        try:
            result = conn.run(cmd, hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut as exc:
            self.close()
            raise GuestError(step, f"timed out after {timeout:.0f} s: {cmd}",
                             stdout=exc.result.stdout, stderr=exc.result.stderr) from exc
        except (paramiko.SSHException, OSError, EOFError, socket.timeout) as exc:
            self.close()
            raise GuestError(step, f"the guest stopped answering ({exc!r}) during: {cmd}") from exc
        if check and result.exited != 0:
            raise GuestError(step, f"exit {result.exited}: {cmd}", exit_code=result.exited,
                             stdout=result.stdout, stderr=result.stderr)
        return result

    def put(self, local: str | Path, remote: str, step: str | None = None) -> None:
        step = step or f"put {local} -> {remote}"
        try:
            self.connect(step).put(str(local), remote)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise GuestError(step, repr(exc)) from exc

    def get(self, remote: str, local: str | Path, step: str | None = None) -> None:
        step = step or f"get {remote} -> {local}"
        try:
            self.connect(step).get(remote, str(local))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise GuestError(step, repr(exc)) from exc
