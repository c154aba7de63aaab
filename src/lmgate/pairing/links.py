"""Where a phone should go to pair, and what it should trust when it gets there.

The link is `SCHEME://HOST:PORT/pair/CODE`; when the gateway serves a certificate signed by its
own LAN CA (`lmgate tls selfsigned`), the link's fragment carries that CA's SHA-256 fingerprint
(`#fp=...`): the fragment never leaves the phone, and the pairing page compares it with the CA it
offers for download, so a swapped certificate shows up before anyone trusts it. The QR code
carries the same link.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path

import segno
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lmgate.guard.exposure import lan_addresses
from lmgate.settings import Settings

_WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True, slots=True)
class LanCa:
    """The CA that signed the served certificate, as clients download it."""

    pem: bytes
    der: bytes
    fingerprint: str  # SHA-256 of the DER, colon-separated upper-case hex

    def mobileconfig(self) -> bytes:
        """An Apple configuration profile (iOS, iPadOS, macOS) that installs the CA."""
        payload = base64.b64encode(self.der).decode()
        ident = uuid.uuid5(uuid.NAMESPACE_URL, "lmgate-ca:" + self.fingerprint)
        inner = uuid.uuid5(ident, "cert")
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>PayloadCertificateFileName</key><string>lmgate-ca.cer</string>
      <key>PayloadContent</key><data>{payload}</data>
      <key>PayloadDisplayName</key><string>lmgate LAN CA</string>
      <key>PayloadIdentifier</key><string>lmgate.ca.{inner}</string>
      <key>PayloadType</key><string>com.apple.security.root</string>
      <key>PayloadUUID</key><string>{str(inner).upper()}</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>
  </array>
  <key>PayloadDisplayName</key><string>lmgate LAN certificate authority</string>
  <key>PayloadIdentifier</key><string>lmgate.profile.{ident}</string>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{str(ident).upper()}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
""".encode()


def fingerprint_of(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def lan_ca(settings: Settings) -> LanCa | None:
    """The CA beside the served certificate (`ca.pem`, as `lmgate tls selfsigned` writes it),
    if it really issued that certificate; None when TLS is off or the certificate is public."""
    if settings.tls_cert is None:
        return None
    ca_path = Path(settings.tls_cert).parent / "ca.pem"
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        cert = x509.load_pem_x509_certificate(Path(settings.tls_cert).read_bytes())
    except (OSError, ValueError):
        return None
    if cert.issuer != ca.subject:
        return None
    der = ca.public_bytes(serialization.Encoding.DER)
    pem = ca.public_bytes(serialization.Encoding.PEM)
    return LanCa(pem, der, fingerprint_of(der))


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_part(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def base_url(settings: Settings, request_host: str | None = None) -> str:
    """The address a device on the LAN reaches the gateway at: the host the admin used, unless
    that is loopback; else the listen address, unless it is a wildcard or loopback; else this
    machine's first LAN address."""
    scheme = "https" if settings.tls_cert is not None else "http"
    if request_host and not _is_loopback(request_host.rsplit(":", 1)[0].strip("[]")):
        return f"{scheme}://{request_host}"
    host = settings.host.strip()
    if host in _WILDCARDS or _is_loopback(host):
        found = lan_addresses()
        v4 = [a for a in found if a.version == 4]
        host = str((v4 or found)[0]) if found else "127.0.0.1"
    return f"{scheme}://{_host_part(host)}:{settings.port}"


def pairing_link(base: str, code: str, ca: LanCa | None) -> str:
    link = f"{base.rstrip('/')}/pair/{code}"
    return f"{link}#fp={ca.fingerprint.replace(':', '')}" if ca is not None else link


def qr_png(link: str) -> bytes:
    """The link as a PNG QR code (dark on white, with its quiet zone)."""
    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="png", scale=8, border=4)
    return out.getvalue()


def qr_terminal(link: str) -> str:
    """The QR code in block characters for a terminal, two rows per line."""
    matrix = [list(row) for row in segno.make(link, error="m").matrix_iter(scale=1, border=2)]
    if len(matrix) % 2:
        matrix.append([0] * len(matrix[0]))
    lines = []
    for top, bottom in zip(matrix[::2], matrix[1::2], strict=True):
        # Light modules are drawn as blocks and dark ones left blank, the contrast a dark
        # terminal needs; phone cameras read the inverted code a light terminal shows as well.
        chars = []
        for t, b in zip(top, bottom, strict=True):
            chars.append({(0, 0): "█", (1, 0): "▄", (0, 1): "▀", (1, 1): " "}[(t, b)])
        lines.append("".join(chars))
    return "\n".join(lines)
