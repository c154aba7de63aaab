"""nginx as the reference proxy: the figure lmgate is set against besides the bare upstream.

It runs from a config written into the run's temp dir (its pid file, logs and temp paths
there too, nothing in /etc or /var), in the foreground, on the same core(s) as lmgate,
proxying to the same upstream over pooled HTTP/1.1 keep-alive connections with response
buffering off, so SSE events pass one by one as lmgate relays them.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from pathlib import Path

from bench.processes import Child, Children, free_port, wait_http

_CANDIDATES = ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

_CONFIG = """\
daemon off;
{user}master_process {master};
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def find() -> str | None:
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def version(binary: str) -> str:
    """`nginx -v` says `nginx version: nginx/1.22.1` on stderr."""
    try:
        said = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=5).stderr
    except (OSError, subprocess.SubprocessError):
        return "nginx"
    return said.strip().rpartition(" ")[2].replace("/", " ") or "nginx"


def config(tmp: Path, upstream: str, port: int, workers: int, nofile: int) -> str:
    host = upstream.split("://", 1)[-1].rstrip("/")
    # a root master would hand its workers to `nobody`, who cannot enter the private temp dir
    user = "user root;\n" if workers > 1 and os.geteuid() == 0 else ""
    return _CONFIG.format(
        user=user,
        master="on" if workers > 1 else "off",
        workers=workers,
        nofile=nofile,
        connections=max(1024, nofile // 2),
        tmp=tmp,
        upstream=host,
        port=port,
    )


def start(
    kids: Children,
    binary: str,
    workdir: Path,
    upstream: str,
    cpus: frozenset[int] | None,
    *,
    workers: int = 1,
) -> tuple[Child, str]:
    """nginx in front of `upstream`; its child and base URL, once it proxies `/v1/models`."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else nofile
    port = free_port()
    tmp = workdir / "nginx"
    tmp.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(config(tmp, upstream, port, workers, nofile))
    argv = [binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
    child = kids.start("nginx", argv, cwd=tmp, cpus=cpus)
    url = f"http://127.0.0.1:{port}"
    wait_http(child, url + "/v1/models")
    return child, url
