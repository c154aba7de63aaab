"""A real nginx reverse proxy in front of a gateway, for forwarded-header tests.

It runs in the foreground from a config in the test's temp dir (nothing in /etc or /var),
listens on 127.0.0.1 and connects to the gateway from `bind` (a 127.x address the gateway
trusts), setting the forwarding header the way a stock nginx setup does. The client's own
headers (`Forwarded` included) pass through untouched, as nginx does by default.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.servers import free_port, stop_process

# How the standard setups fill in each header: X-Forwarded-For from nginx's own variable; for
# RFC 7239, the client's chain with this hop appended.
SET_HEADER = {
    "X-Forwarded-For": "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "Forwarded": "proxy_set_header Forwarded $lmgate_forwarded;",
}

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_forwarded $lmgate_forwarded {{
        ""      "for=$remote_addr";
        default "$http_forwarded, for=$remote_addr";
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_bind {bind};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {set_header}
            proxy_buffering off;
        }}
    }}
}}
"""


def binary() -> str | None:
    for name in ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Nginx:
    def __init__(self, exe: str, tmp: Path, upstream_port: int, bind: str, header: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        conf = tmp / "nginx.conf"
        conf.write_text(
            _CONFIG.format(
                tmp=tmp,
                port=self.port,
                upstream=upstream_port,
                bind=bind,
                set_header=SET_HEADER[header],
            )
        )
        argv = [exe, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.logs()}")
            try:
                httpx.get(self.url + "/health", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not start: {self.logs()}")

    def logs(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)
