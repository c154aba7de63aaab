"""macOS: the launchd plist, parsed with plistlib and checked against launchd's keys."""

from __future__ import annotations

import plistlib
from pathlib import Path, PurePosixPath

import pytest

from lmgate.service import launchd
from lmgate.service.spec import build_spec
from lmgate.settings import Settings
from tests.servers import ServerProcess
from tests.service.helpers import ADMIN, service

# launchd.plist(5): the keys a job may have, and their types
LAUNCHD_KEYS: dict[str, type | tuple[type, ...]] = {
    "Label": str,
    "ProgramArguments": list,
    "WorkingDirectory": str,
    "RunAtLoad": bool,
    "KeepAlive": (bool, dict),
    "ThrottleInterval": int,
    "ExitTimeOut": int,
    "ProcessType": str,
    "EnvironmentVariables": dict,
    "StandardOutPath": str,
    "StandardErrorPath": str,
    "Umask": int,
    "UserName": str,
}


@pytest.mark.parametrize("system", [True, False])
def test_plist(tmp_path: Path, system: bool) -> None:
    settings = Settings(admin_key=ADMIN)  # type: ignore[arg-type]
    spec = build_spec(settings, {"admin_key"}, data_dir=tmp_path / "data")
    home = PurePosixPath("/Users/alice")
    plan = launchd.plan(spec, system=system, home=home, uid=501, user="alice")
    job = plistlib.loads(plan.files[0].content)
    assert set(job) <= set(LAUNCHD_KEYS), set(job) - set(LAUNCHD_KEYS)
    for key, value in job.items():
        assert isinstance(value, LAUNCHD_KEYS[key]), key
    assert job["Label"] == "lmgate"
    assert job["ProgramArguments"][-3:] == ["-m", "lmgate", "serve"]
    assert job["RunAtLoad"] is True and job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["StandardErrorPath"].startswith(str(tmp_path / "data" / "logs"))
    env_file = plan.files[1]
    assert env_file.path == PurePosixPath(job["WorkingDirectory"]) / ".env"
    assert env_file.mode == 0o600 and ADMIN in env_file.content.decode()
    assert ADMIN not in plan.files[0].content.decode()  # keys stay out of the plist
    if system:
        assert plan.files[0].path == PurePosixPath("/Library/LaunchDaemons/lmgate.plist")
        assert job["UserName"] == "alice"
        assert ["launchctl", "bootstrap", "system", str(plan.files[0].path)] in plan.commands
    else:
        assert plan.files[0].path == home / "Library/LaunchAgents/lmgate.plist"
        assert "UserName" not in job
        assert plan.undo == [["launchctl", "bootout", "gui/501/lmgate"]]


def test_macos_install_under_root(tmp_path: Path, emulator: ServerProcess) -> None:
    root = tmp_path / "root"
    args = ["--platform", "macos", "--system", "--root", str(root), "--run-as", "alice"]
    out = service(tmp_path, "install", *args, "--upstream", emulator.url)
    assert out.returncode == 0, out.stderr
    assert "launchctl bootstrap system /Library/LaunchDaemons/lmgate.plist" in out.stdout
    plist = root / "Library/LaunchDaemons/lmgate.plist"
    job = plistlib.loads(plist.read_bytes())
    env = root / "Library/Application Support/lmgate/service/.env"
    assert env.stat().st_mode & 0o777 == 0o600
    assert "LMGATE_DATA_DIR='/Library/Application Support/lmgate/data'" in env.read_text()
    assert job["WorkingDirectory"] == "/Library/Application Support/lmgate/service"
    logs = root / "Library/Application Support/lmgate/data/logs"
    (logs / "lmgate.err.log").write_text("one\ntwo\nthree\n")
    shown = service(tmp_path, "logs", *args[:-2], "-n", "2")
    assert shown.returncode == 0 and shown.stdout.splitlines()[-2:] == ["two", "three"]
    gone = service(tmp_path, "uninstall", *args)
    assert gone.returncode == 0 and not plist.exists() and not env.exists()
    assert (logs / "lmgate.err.log").exists()  # logs and state stay
