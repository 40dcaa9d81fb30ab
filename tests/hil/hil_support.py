"""Test helpers: certificates, a cuttable TCP link, a device that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
PASSWORD = "hil-test-secret-0123"  # 20 bytes, within OCPP's 16..40


def run(coro, timeout_s: float = 30.0):
    """Run a coroutine in a fresh event loop with a bound on its duration."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def make_certificates(folder: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sdg-twin test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csms.local")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.pem", "cert": folder / "csms.pem", "key": folder / "csms.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


def legacy_tls_context(server: bool, max_version: ssl.TLSVersion, certs: dict | None = None
                       ) -> ssl.SSLContext:
    """A context that speaks TLS 1.0/1.1 (security level 0), to test refusals."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = max_version
    if server:
        ctx.load_cert_chain(certs["cert"], certs["key"])
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class LinkProxy:
    """A TCP relay between a client and a server whose link the test can cut.

    ``cut()`` black-holes the open connections (bytes are dropped, sockets stay open, as when a
    cable is pulled) and closes new ones at once; ``restore()`` forwards new connections again.
    Runs in its own thread so it works for blocking and asyncio clients alike.
    """

    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self.up = True
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._stop = False
        self._epoch = 0  # bumped by cut(): connections of older epochs are dead
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append((client, server))
            epoch = self._epoch
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, epoch), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, epoch: int) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                break
            if not data:
                break
            if not self.up or self._epoch != epoch:
                continue  # black hole: the cable is pulled
            try:
                dst.sendall(data)
            except OSError:
                break
        if self.up and self._epoch == epoch:
            for s in (src, dst):
                with contextlib.suppress(OSError):  # the peer may have closed it already
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Pull the cable: drop traffic of open connections, refuse new ones."""
        self.up = False
        self._epoch += 1

    def restore(self) -> None:
        """Plug it back: new connections are forwarded (the old ones stay dead)."""
        self.up = True

    def close(self) -> None:
        """Stop the relay and close every socket."""
        self._stop = True
        self._listener.close()
        with self._lock:
            for a, b in self._conns:
                a.close()
                b.close()


class SilentDevice:
    """A TCP listener that accepts connections and never answers anything."""

    def __init__(self) -> None:
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                s, _ = self._listener.accept()
            except OSError:
                return
            self._socks.append(s)

    def close(self) -> None:
        self._listener.close()
        for s in self._socks:
            s.close()


def wait_until(predicate, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``predicate`` until true or the timeout; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())
