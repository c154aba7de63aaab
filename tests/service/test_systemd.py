"""Linux: the unit and its env file, checked by systemd itself where it is installed, and an
install under --root read back as systemd would find it at boot."""

from __future__ import annotations

import configparser
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from lmgate.service import systemd
from lmgate.service.spec import ServiceSpec, build_spec
from lmgate.settings import Settings
from tests.servers import ServerProcess, free_port
from tests.service.helpers import ADMIN, API, service

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "read-only",
    "PrivateTmp": "yes",
    "Restart": "on-failure",
}
needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("systemctl") is None,
    reason="systemd's tools are not installed (apt-get install systemd)",
)


def _unit(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(text)
    return parser


def _spec(tmp: Path, **update: object) -> ServiceSpec:
    settings = Settings(upstream="http://127.0.0.1:1234", admin_key=ADMIN, **update)  # type: ignore[arg-type]
    return build_spec(settings, {"admin_key", *update}, data_dir=tmp / "data")


@pytest.mark.parametrize("system", [True, False])
def test_unit_is_hardened(tmp_path: Path, system: bool) -> None:
    spec = _spec(tmp_path)
    plan = systemd.plan(spec, system=system, home=PurePosixPath(tmp_path / "home"))
    unit_file = plan.files[0]
    unit = _unit(unit_file.content.decode())
    service_section = unit["Service"]
    in_tmp = systemd._uses_tmp(spec)  # pytest's tmp_path is usually under /tmp
    for key, value in HARDENING.items():
        if key != "PrivateTmp" or not in_tmp:
            assert service_section[key] == value, key
    families = service_section["RestrictAddressFamilies"].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)
    assert service_section["ReadWritePaths"] == str(tmp_path / "data")
    assert service_section["ExecStart"].endswith("-m lmgate serve")
    env_path = plan.files[1].path
    assert service_section["EnvironmentFile"] == str(env_path)
    assert plan.files[1].mode == 0o600 and plan.files[1].secret
    assert ADMIN not in unit_file.content.decode()  # keys only in the env file
    if system:
        assert service_section["User"] == systemd.USER
        assert unit["Install"]["WantedBy"] == "multi-user.target"
        assert unit_file.path == PurePosixPath("/etc/systemd/system/lmgate.service")
        assert service_section["CapabilityBoundingSet"] == ""
    else:
        assert "User" not in service_section
        assert unit["Install"]["WantedBy"] == "default.target"
        assert str(unit_file.path).startswith(str(tmp_path / "home/.config/systemd/user"))
        assert any("enable-linger" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("data_dir", "tls_dir", "private_tmp"),
    [
        ("/var/lib/lmgate", "/etc/lmgate", True),
        ("/tmp/lmgate-data", "/etc/lmgate", False),
        ("/var/tmp/lmgate", "/etc/lmgate", False),
        ("/var/lib/lmgate", "/tmp/certs", False),
        ("/var/lib/tmpfiles", "/etc/tmp", True),
    ],
)
def test_private_tmp_never_hides_what_the_service_reads(
    data_dir: str, tls_dir: str, private_tmp: bool
) -> None:
    """A private /tmp would hide a data dir or certificate kept there: the unit would fail."""
    settings = Settings(
        upstream="http://127.0.0.1:1234",
        admin_key=ADMIN,
        tls_cert=f"{tls_dir}/cert.pem",  # type: ignore[arg-type]
        tls_key=f"{tls_dir}/key.pem",  # type: ignore[arg-type]
    )
    spec = build_spec(settings, {"admin_key", "tls_cert", "tls_key"}, data_dir=Path(data_dir))
    unit = _unit(systemd.unit(spec, system=True, env_file=PurePosixPath("/etc/lmgate/x.env")))
    assert ("PrivateTmp" in unit["Service"]) is private_tmp
    assert unit["Service"]["ReadWritePaths"] == data_dir


def test_low_port_gets_only_that_capability(tmp_path: Path) -> None:
    spec = _spec(tmp_path, port=443)
    unit = _unit(
        systemd.plan(spec, system=True, home=PurePosixPath("/root")).files[0].content.decode()
    )
    assert unit["Service"]["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert unit["Service"]["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"


@needs_systemd
@pytest.mark.parametrize("system", [True, False])
def test_systemd_analyze_verify(tmp_path: Path, system: bool) -> None:
    spec = _spec(tmp_path, host="0.0.0.0", port=80)
    plan = systemd.plan(spec, system=system, home=PurePosixPath(tmp_path / "home"))
    unit_path = tmp_path / "lmgate.service"
    unit_path.write_bytes(plan.files[0].content)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in out.stderr.splitlines() if "lmgate.service" in line]
    assert out.returncode == 0 and not complaints, out.stderr


def _exposed_install(
    tmp_path: Path, root: Path, upstream: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`service install --system` under `root`, listening on every address."""
    args = ("--system", "--root", str(root), "--host", "0.0.0.0", "--upstream", upstream)
    return service(tmp_path, "install", *args, env=env)


@needs_systemd
def test_install_under_root_is_what_systemd_enables(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    root = tmp_path / "root"
    env = {"LMGATE_ADMIN_KEY": ADMIN, "LMGATE_API_KEYS": API}
    out = _exposed_install(tmp_path, root, emulator.url, env)
    assert out.returncode == 0, out.stderr
    assert ADMIN not in out.stdout + out.stderr and API not in out.stdout + out.stderr
    assert "nothing was started" in out.stdout and "lmgate service uninstall --system" in out.stdout
    unit = root / "etc/systemd/system/lmgate.service"
    env_file = root / "etc/lmgate/lmgate.env"
    link = root / "etc/systemd/system/multi-user.target.wants/lmgate.service"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    assert f"LMGATE_ADMIN_KEY={ADMIN}" in text and f"LMGATE_API_KEYS={API}" in text
    assert "LMGATE_HOST=0.0.0.0" in text and f"LMGATE_UPSTREAM={emulator.url}" in text
    assert "LMGATE_DATA_DIR=/var/lib/lmgate" in text
    assert (root / "etc/sysusers.d/lmgate.conf").read_text().count("u lmgate ") == 1
    # systemd, asked about this root, finds the unit enabled
    enabled = subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", "lmgate.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enabled.stdout.strip() == "enabled", enabled.stdout + enabled.stderr
    # and its own `enable` would have made exactly our link
    other = tmp_path / "other"
    (other / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, other / "etc/systemd/system/lmgate.service")
    subprocess.run(
        ["systemctl", f"--root={other}", "enable", "lmgate.service"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    made = other / "etc/systemd/system/multi-user.target.wants/lmgate.service"
    assert link.is_symlink() and made.is_symlink()
    assert link.readlink() == made.readlink() == Path("/etc/systemd/system/lmgate.service")
    # status reads back what is installed; uninstall removes all of it
    status = service(tmp_path, "status", "--system", "--root", str(root))
    assert status.returncode == 0 and status.stdout.count("installed  /") == 4, status.stdout
    gone = service(tmp_path, "uninstall", "--system", "--root", str(root))
    assert gone.returncode == 0, gone.stderr
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    assert left == [], left
    assert not (root / "etc/lmgate").exists()
    after = subprocess.run(
        ["systemctl", f"--root={root}", "is-enabled", "lmgate.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert after.returncode != 0
    status = service(tmp_path, "status", "--system", "--root", str(root))
    assert status.returncode == 3


def test_user_install_and_uninstall(tmp_path: Path, emulator: ServerProcess) -> None:
    root = tmp_path / "root"
    out = service(tmp_path, "install", "--user", "--root", str(root), "--upstream", emulator.url)
    assert out.returncode == 0, out.stderr
    home = str(tmp_path / "home").lstrip("/")
    unit = root / home / ".config/systemd/user/lmgate.service"
    link = root / home / ".config/systemd/user/default.target.wants/lmgate.service"
    assert unit.is_file() and link.is_symlink()
    assert "loginctl enable-linger" in out.stdout
    data = root / home / ".local/share/lmgate"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    gone = service(tmp_path, "uninstall", "--user", "--root", str(root))
    assert gone.returncode == 0 and not unit.exists() and not link.is_symlink()
    assert data.is_dir()  # the state stays


def test_refuses_what_doctor_fails(tmp_path: Path, emulator: ServerProcess) -> None:
    root = tmp_path / "root"
    weak = {"LMGATE_ADMIN_KEY": "changeme123"}
    out = _exposed_install(tmp_path, root, emulator.url, weak)
    assert out.returncode == 1
    assert "weak-key" in out.stderr and "refusing to install" in out.stderr
    assert "changeme123" not in out.stdout + out.stderr
    assert not root.exists()
    dead = f"http://127.0.0.1:{free_port()}"
    out = service(tmp_path, "install", "--system", "--root", str(root), "--upstream", dead)
    assert out.returncode == 1 and "upstream" in out.stderr and not root.exists()
    # an upstream that sleeps is what Wake-on-LAN is for: not a reason to refuse
    wake = {"LMGATE_WAKE_MAC": "3c:7c:3f:12:34:56"}
    out = service(
        tmp_path, "install", "--system", "--root", str(root), "--upstream", dead, env=wake
    )
    assert out.returncode == 0, out.stderr
    assert "LMGATE_WAKE_MAC=3c:7c:3f:12:34:56" in (root / "etc/lmgate/lmgate.env").read_text()
    # an invalid configuration stops before anything, as serve would
    bad = service(tmp_path, "install", "--root", str(root), "--port", "abc")
    assert bad.returncode == 2 and "--port abc" in bad.stderr


def test_dry_run_masks_keys_unless_asked(tmp_path: Path, emulator: ServerProcess) -> None:
    env = {"LMGATE_ADMIN_KEY": ADMIN, "LMGATE_UPSTREAM_TOKEN": "upstream-token-secret-value"}
    out = service(tmp_path, "install", "--system", "--dry-run", "--upstream", emulator.url, env=env)
    assert out.returncode == 0, out.stderr
    assert ADMIN not in out.stdout and "upstream-token-secret-value" not in out.stdout
    assert "LMGATE_ADMIN_KEY=********" in out.stdout and "--show-secrets" in out.stdout
    assert "==> /etc/systemd/system/lmgate.service" in out.stdout
    assert "==> run: systemctl enable --now lmgate.service" in out.stdout
    assert not (tmp_path / "home/.config").exists()
    shown = service(
        tmp_path,
        "install",
        "--system",
        "--dry-run",
        "--show-secrets",
        "--upstream",
        emulator.url,
        env=env,
    )
    assert f"LMGATE_ADMIN_KEY={ADMIN}" in shown.stdout


def test_settings_file_values_are_written_out(tmp_path: Path, emulator: ServerProcess) -> None:
    config = tmp_path / "lmgate.toml"
    config.write_text(
        f'upstream = "{emulator.url}"\nport = 8123\nqueueMax = 9\n'
        '[wake]\nmac = "3c-7c-3f-12-34-56"\nbroadcast = "192.168.1.255"\n'
    )
    root = tmp_path / "root"
    out = service(tmp_path, "install", "--user", "--root", str(root), "--config", str(config))
    assert out.returncode == 0, out.stderr
    home = str(tmp_path / "home").lstrip("/")
    text = (root / home / ".config/lmgate/lmgate.env").read_text()
    for line in (
        "LMGATE_PORT=8123",
        "LMGATE_QUEUE_MAX=9",
        f"LMGATE_UPSTREAM={emulator.url}",
        "LMGATE_WAKE_MAC=3c:7c:3f:12:34:56",
        "LMGATE_WAKE_BROADCAST=192.168.1.255:9",
    ):
        assert line in text.splitlines(), (line, text)
    assert "LMGATE_CONFIG" not in text  # the file's values, not a path the service may not read


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="systemd is PID 1 here")
def test_without_systemd_running_files_are_written_and_enabled_for_boot(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    """No --root: the real paths (a user service, under this test's HOME). systemd is not
    PID 1 here, so the unit is written and linked but not started, and the user is told."""
    out = service(tmp_path, "install", "--user", "--upstream", emulator.url)
    assert out.returncode == 0, out.stderr
    assert "systemd is not running here" in out.stdout and "next boot" in out.stdout
    assert "systemctl --user enable --now lmgate.service" in out.stdout  # listed, not run
    home = tmp_path / "home"
    link = home / ".config/systemd/user/default.target.wants/lmgate.service"
    assert link.is_symlink() and link.resolve() == home / ".config/systemd/user/lmgate.service"
    status = service(tmp_path, "status", "--user")
    assert status.returncode == 0 and "systemd is not running here" in status.stdout
    logs = service(tmp_path, "logs", "--user")
    assert logs.returncode == 1 and "systemd is not running here" in logs.stderr
    gone = service(tmp_path, "uninstall", "--user")
    assert gone.returncode == 0 and not link.is_symlink()
    assert not (home / ".config/lmgate").exists()
