"""Throwaway TLS material for a PostgreSQL that speaks TLS: a CA made on the spot and a server certificate
it signs for the given addresses. Used by the transport tests and the cold-start benchmark (never for a
real deployment: Amazon RDS brings its own certificates and CA bundle)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path           # what a client verifies the server with (sslrootcert, DATABASE_CA_BUNDLE)
    other_ca: Path     # a CA that did not sign the server's certificate: verification must fail with it
    server_cert: Path
    server_key: Path

    def server_settings(self) -> dict[str, str]:
        """PostgreSQL settings that serve TLS with this certificate."""
        return {"ssl": "on", "ssl_cert_file": str(self.server_cert), "ssl_key_file": str(self.server_key)}


def _ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(ca_key, ca_cert, addresses: tuple[str, ...]):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([*names, x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_tls_files(directory: Path, addresses: tuple[str, ...] = ("127.0.0.1",), server_user=None) -> TlsFiles:
    """A CA, another CA and a server certificate for ``addresses`` written to ``directory``. The directory
    and certificates are made readable, and the key owned by ``server_user`` (a pwd entry) when the server
    runs as its own OS user."""
    from cryptography.hazmat.primitives import serialization

    ca_key, ca_cert = _ca("medical-records test CA")
    server_key, server_cert = _server_cert(ca_key, ca_cert, addresses)
    _other_key, other_ca = _ca("some other CA")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "other-ca.crt", directory / "server.crt",
                     directory / "server.key")
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.other_ca.write_bytes(other_ca.public_bytes(pem))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    files.server_key.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    for path in (directory.parent, directory):
        os.chmod(path, 0o755)  # noqa: S103  (the server runs as its own OS user and must reach its certificate)
    for path in directory.iterdir():
        os.chmod(path, 0o600 if path.suffix == ".key" else 0o644)
        if server_user is not None:
            os.chown(path, server_user.pw_uid, server_user.pw_gid)
    return files


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (so a client treats the server as remote and
    verifies it), or None when the machine has none."""
    import socket

    try:
        names = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        names = []
    candidates = [info[4][0] for info in names]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only asks the routing table
            candidates.append(probe.getsockname()[0])
    except OSError:
        pass
    for address in candidates:
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None
