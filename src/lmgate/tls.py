"""A LAN certificate for people who have no CA: a one-off local CA and a server certificate.

Clients trust `ca.pem` (one file to copy); the server presents `cert.pem` with `key.pem`. The
CA's private key is thrown away once it has signed, so this CA can vouch for this one
certificate and nothing else, ever; making a new certificate means trusting a new CA. The
server certificate names this host's LAN addresses and names, so clients reach it by any of
them. Lifetimes stay within what Apple platforms accept from a user-installed CA (825 days).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lmgate.guard.allowlist import IPAddress

MAX_DAYS = 825


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the CA certificate, for checking it by eye on a client


def default_names() -> list[str]:
    host = socket.gethostname()
    names = ["localhost", host]
    if "." not in host:
        names.append(f"{host}.local")  # mDNS name on macOS and most Linux desktops
    return names


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lmgate"),
            x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
        ]
    )


def _usage(*, key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    """Digital signature (what ECDSA keys do in TLS), plus signing certificates for the CA."""
    off = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False
    )
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
        **off,
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(mode)


def make_lan_certificate(
    out_dir: Path, names: Iterable[str], addresses: Iterable[IPAddress], *, days: int = MAX_DAYS
) -> TlsFiles:
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    dns = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    ips = list(
        dict.fromkeys([ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), *addresses])
    )
    now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate clients whose clocks lag a bit
    until = now + timedelta(days=days)
    host = dns[1] if len(dns) > 1 else "localhost"

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"lmgate local CA for {host}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = serialization.Encoding.PEM
    files = TlsFiles(
        ca=out_dir / "ca.pem",
        cert=out_dir / "cert.pem",
        key=out_dir / "key.pem",
        fingerprint=ca.fingerprint(hashes.SHA256()).hex(":").upper(),
    )
    _write(
        files.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        0o600,
    )
    _write(files.cert, cert.public_bytes(pem) + ca.public_bytes(pem), 0o644)
    _write(files.ca, ca.public_bytes(pem), 0o644)
    return files
