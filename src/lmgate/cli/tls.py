"""`lmgate tls selfsigned`: a certificate for HTTPS on a LAN, and how clients come to trust it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from lmgate.cli.serve import load_settings

tls_app = typer.Typer(help="TLS certificates for serving HTTPS on a LAN.")

_CLIENTS = """\
Serve with:
  lmgate serve --host 0.0.0.0 --tls-cert {cert} --tls-key {key}

Give clients {ca} (it is public; the key stays here), then:
  curl --cacert ca.pem https://HOST:1235/v1/models -H "Authorization: Bearer KEY"
  Python (openai, anthropic, httpx, requests):  export SSL_CERT_FILE=/path/to/ca.pem
    or  OpenAI(base_url="https://HOST:1235/v1", http_client=httpx.Client(verify="ca.pem"))
  Node:  export NODE_EXTRA_CA_CERTS=/path/to/ca.pem
  Whole machine: macOS Keychain Access (System, 'Always Trust'); Debian/Ubuntu: copy to
    /usr/local/share/ca-certificates/lmgate.crt and run update-ca-certificates;
    Windows: certutil -addstore -user Root ca.pem
Check the CA fingerprint on each client before trusting it:
  {fingerprint}"""


@tls_app.command("selfsigned")
def selfsigned(
    out: Annotated[
        Path | None, typer.Option(help="Directory for ca.pem, cert.pem, key.pem [DATA_DIR/tls].")
    ] = None,
    name: Annotated[
        list[str] | None, typer.Option(help="Extra DNS name for the certificate; repeatable.")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option(help="Extra IP address for the certificate; repeatable.")
    ] = None,
    days: Annotated[int, typer.Option(help="Validity in days (at most 825).")] = 825,
    force: Annotated[bool, typer.Option(help="Overwrite an existing certificate.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
) -> None:
    """Make a local CA and a server certificate naming this host's LAN addresses."""
    from lmgate.guard.exposure import lan_addresses
    from lmgate.tls import default_names, make_lan_certificate

    target = out or load_settings(data_dir=data_dir).data_dir / "tls"
    if (target / "cert.pem").exists() and not force:
        typer.echo(f"lmgate: {target / 'cert.pem'} exists; pass --force to replace it", err=True)
        raise typer.Exit(1)
    try:
        extra = [ipaddress.ip_address(a) for a in ip or []]
    except ValueError as exc:
        typer.echo(f"lmgate: {exc}", err=True)
        raise typer.Exit(2) from exc
    names = [*default_names(), *(name or [])]
    addresses = [*lan_addresses(), *extra]
    try:
        files = make_lan_certificate(target, names, addresses, days=days)
    except ValueError as exc:
        typer.echo(f"lmgate: {exc}", err=True)
        raise typer.Exit(2) from exc
    shown = ", ".join([*dict.fromkeys(n.lower() for n in names), *map(str, addresses)])
    typer.echo(f"Wrote {files.cert}, {files.key} (owner only) and {files.ca}.")
    typer.echo(f"The certificate is valid for: {shown}, 127.0.0.1, ::1\n")
    typer.echo(
        _CLIENTS.format(cert=files.cert, key=files.key, ca=files.ca, fingerprint=files.fingerprint)
    )
