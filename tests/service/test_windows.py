"""Windows: the Task Scheduler task, checked against the task schema's required elements,
namespace, order-free sets of allowed children and value types (a small schema check)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path, PureWindowsPath

import pytest

from lmgate.service import windows
from lmgate.service.spec import build_spec
from lmgate.settings import Settings
from tests.servers import ServerProcess
from tests.service.helpers import ADMIN, service

NS = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"
DURATION = re.compile(r"-?P(\d+Y)?(\d+M)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?")
BOOL = {"true", "false"}
# Task Scheduler schema (taskschedulerschema): element -> (required children, allowed children)
SCHEMA: dict[str, tuple[set[str], set[str]]] = {
    "Task": (
        {"Actions"},
        {"RegistrationInfo", "Triggers", "Settings", "Data", "Principals", "Actions"},
    ),
    "RegistrationInfo": (
        set(),
        {
            "URI",
            "SecurityDescriptor",
            "Source",
            "Date",
            "Author",
            "Version",
            "Description",
            "Documentation",
        },
    ),
    "Triggers": (
        set(),
        {
            "BootTrigger",
            "RegistrationTrigger",
            "IdleTrigger",
            "TimeTrigger",
            "EventTrigger",
            "LogonTrigger",
            "SessionStateChangeTrigger",
            "CalendarTrigger",
        },
    ),
    "BootTrigger": (
        set(),
        {"Enabled", "StartBoundary", "EndBoundary", "ExecutionTimeLimit", "Repetition", "Delay"},
    ),
    "LogonTrigger": (
        set(),
        {
            "Enabled",
            "StartBoundary",
            "EndBoundary",
            "ExecutionTimeLimit",
            "Repetition",
            "UserId",
            "Delay",
        },
    ),
    "Principals": ({"Principal"}, {"Principal"}),
    "Principal": (
        set(),
        {
            "UserId",
            "LogonType",
            "GroupId",
            "DisplayName",
            "RunLevel",
            "ProcessTokenSidType",
            "RequiredPrivileges",
        },
    ),
    "Settings": (
        set(),
        {
            "AllowStartOnDemand",
            "RestartOnFailure",
            "MultipleInstancesPolicy",
            "DisallowStartIfOnBatteries",
            "StopIfGoingOnBatteries",
            "AllowHardTerminate",
            "StartWhenAvailable",
            "NetworkProfileName",
            "RunOnlyIfNetworkAvailable",
            "WakeToRun",
            "Enabled",
            "Hidden",
            "DeleteExpiredTaskAfter",
            "IdleSettings",
            "NetworkSettings",
            "ExecutionTimeLimit",
            "Priority",
            "RunOnlyIfIdle",
            "UseUnifiedSchedulingEngine",
            "DisallowStartOnRemoteAppSession",
        },
    ),
    "IdleSettings": (set(), {"Duration", "WaitTimeout", "StopOnIdleEnd", "RestartOnIdle"}),
    "RestartOnFailure": ({"Interval", "Count"}, {"Interval", "Count"}),
    "Actions": (set(), {"Exec", "ComHandler", "SendEmail", "ShowMessage"}),
    "Exec": ({"Command"}, {"Command", "Arguments", "WorkingDirectory"}),
}
BOOLEANS = {
    "Enabled",
    "AllowStartOnDemand",
    "DisallowStartIfOnBatteries",
    "StopIfGoingOnBatteries",
    "AllowHardTerminate",
    "StartWhenAvailable",
    "RunOnlyIfNetworkAvailable",
    "WakeToRun",
    "Hidden",
    "RunOnlyIfIdle",
    "StopOnIdleEnd",
    "RestartOnIdle",
}
DURATIONS = {"ExecutionTimeLimit", "Interval", "Delay"}
ENUMS = {
    "MultipleInstancesPolicy": {"Parallel", "Queue", "IgnoreNew", "StopExisting"},
    "RunLevel": {"LeastPrivilege", "HighestAvailable"},
    "LogonType": {
        "S4U",
        "Password",
        "InteractiveToken",
        "InteractiveTokenOrPassword",
        "ServiceAccount",
    },
}


def _check(element: ET.Element) -> None:
    assert element.tag.startswith(NS), element.tag
    name = element.tag[len(NS) :]
    children = [child.tag[len(NS) :] for child in element]
    if name in SCHEMA:
        required, allowed = SCHEMA[name]
        assert required <= set(children), (name, required - set(children))
        assert set(children) <= allowed, (name, set(children) - allowed)
        if name != "Principals" and name != "Actions":
            assert len(children) == len(set(children)), (name, children)
    text = (element.text or "").strip()
    if name in BOOLEANS:
        assert text in BOOL, (name, text)
    if name in DURATIONS:
        assert DURATION.fullmatch(text), (name, text)
    if name in ENUMS:
        assert text in ENUMS[name], (name, text)
    if name == "Priority":
        assert 0 <= int(text) <= 10
    for child in element:
        _check(child)


@pytest.mark.parametrize("system", [True, False])
def test_task_xml(tmp_path: Path, system: bool) -> None:
    settings = Settings(admin_key=ADMIN)  # type: ignore[arg-type]
    spec = build_spec(settings, {"admin_key"}, data_dir=tmp_path)
    plan = windows.plan(
        spec,
        system=system,
        program_data=PureWindowsPath(r"C:\ProgramData"),
        local_app_data=PureWindowsPath(r"C:\Users\alice\AppData\Local"),
        user=None if system else "alice",
    )
    raw = plan.files[0].content
    assert raw.startswith(b"\xff\xfe")  # UTF-16 with its BOM, as schtasks /XML reads it
    task = ET.fromstring(raw)
    assert task.tag == f"{NS}Task" and task.get("version") == "1.2"
    _check(task)
    principal = task.find(f"{NS}Principals/{NS}Principal")
    actions = task.find(f"{NS}Actions")
    assert principal is not None and actions is not None
    assert actions.get("Context") == principal.get("id")  # the action runs as that principal
    command = task.findtext(f"{NS}Actions/{NS}Exec/{NS}Command")
    assert command == spec.argv[0]
    assert task.findtext(f"{NS}Actions/{NS}Exec/{NS}Arguments") == "-m lmgate serve"
    workdir = task.findtext(f"{NS}Actions/{NS}Exec/{NS}WorkingDirectory")
    assert plan.files[1].path == PureWindowsPath(workdir or "") / ".env"
    env = plan.files[1].content.decode()
    assert ADMIN in env and "LMGATE_LOG_FILE=" in env and ADMIN not in raw.decode("utf-16")
    if system:
        assert task.find(f"{NS}Triggers/{NS}BootTrigger") is not None
        assert principal.findtext(f"{NS}UserId") == windows.LOCAL_SERVICE
        assert str(plan.files[0].path).startswith("C:\\ProgramData\\lmgate\\service")
    else:
        assert task.findtext(f"{NS}Triggers/{NS}LogonTrigger/{NS}UserId") == "alice"
        assert principal.findtext(f"{NS}LogonType") == "InteractiveToken"
    create = ["schtasks", "/Create", "/TN", "lmgate", "/XML", str(plan.files[0].path), "/F"]
    assert create in plan.commands
    assert ["schtasks", "/Delete", "/TN", "lmgate", "/F"] in plan.undo


def test_windows_dry_run(tmp_path: Path, emulator: ServerProcess) -> None:
    out = service(
        tmp_path,
        "install",
        "--platform",
        "windows",
        "--system",
        "--dry-run",
        "--upstream",
        emulator.url,
        env={"LMGATE_ADMIN_KEY": ADMIN},
    )
    assert out.returncode == 0, out.stderr
    assert "<BootTrigger>" in out.stdout and "schtasks /Create /TN lmgate /XML" in out.stdout
    assert ADMIN not in out.stdout
    # not this machine: a real install is refused, --root is fine
    refused = service(tmp_path, "install", "--platform", "windows", "--upstream", emulator.url)
    assert refused.returncode == 2 and "--root" in refused.stderr
