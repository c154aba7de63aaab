"""Windows: a Task Scheduler task, registered with `schtasks /Create /XML` (no extra tools).

A Python process is not a Windows service: that would need a service host such as pywin32's
or nssm. A task started by the Task Scheduler at boot (`--system`, as LOCAL SERVICE, an
account with no rights beyond its own) or at log-on (the user's), restarted when it fails,
needs nothing but Windows. Settings go into a `.env` in the task's working directory, whose
access is limited to the account that runs it; the gateway's log goes to a file under the
data dir (a task has no console to write to).
"""

from __future__ import annotations

from pathlib import PureWindowsPath
from xml.sax.saxutils import escape

from lmgate.service.spec import Plan, ServiceFile, ServiceSpec, quote

TASK = "lmgate"
NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"
LOCAL_SERVICE = "S-1-5-19"
SYSTEM = "S-1-5-18"
ADMINISTRATORS = "S-1-5-32-544"


def _args(argv: tuple[str, ...]) -> str:
    """Windows command-line quoting (as `subprocess.list2cmdline` does)."""
    import subprocess

    return subprocess.list2cmdline(list(argv))


def task_xml(
    spec: ServiceSpec, *, system: bool, workdir: PureWindowsPath, user: str | None
) -> bytes:
    if system:
        trigger = "    <BootTrigger>\n      <Enabled>true</Enabled>\n    </BootTrigger>"
        principal = (
            f"      <UserId>{LOCAL_SERVICE}</UserId>\n      <RunLevel>LeastPrivilege</RunLevel>"
        )
    else:
        who = f"\n      <UserId>{escape(user)}</UserId>" if user else ""
        trigger = f"    <LogonTrigger>\n      <Enabled>true</Enabled>{who}\n    </LogonTrigger>"
        principal = (
            (f"      <UserId>{escape(user)}</UserId>\n" if user else "")
            + "      <LogonType>InteractiveToken</LogonType>\n"
            "      <RunLevel>LeastPrivilege</RunLevel>"
        )
    text = f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="{NAMESPACE}">
  <RegistrationInfo>
    <Description>lmgate: a secure LAN gateway in front of LM Studio</Description>
    <URI>\\{TASK}</URI>
  </RegistrationInfo>
  <Triggers>
{trigger}
  </Triggers>
  <Principals>
    <Principal id="Author">
{principal}
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(spec.argv[0])}</Command>
      <Arguments>{escape(_args(spec.argv[1:]))}</Arguments>
      <WorkingDirectory>{escape(str(workdir))}</WorkingDirectory>
    </Exec>
  </Actions>
</Task>
"""
    return text.replace("\n", "\r\n").encode("utf-16")  # with its BOM, as schtasks wants


def plan(
    spec: ServiceSpec,
    *,
    system: bool,
    program_data: PureWindowsPath,
    local_app_data: PureWindowsPath,
    user: str | None,
) -> Plan:
    result = Plan("windows", "system" if system else "user")
    base = (program_data if system else local_app_data) / "lmgate"
    workdir = base / "service"
    data = PureWindowsPath(spec.data_dir)
    xml_path = workdir / "lmgate-task.xml"
    log_file = data / "logs" / "lmgate.log"
    env = spec.env_file()
    shown = spec.env_file(show_secrets=False)
    if "LMGATE_LOG_FILE=" not in env:
        line = f"LMGATE_LOG_FILE={quote(log_file.as_posix())}\n"
        env += line
        shown += line
    result.files.append(
        ServiceFile(xml_path, task_xml(spec, system=system, workdir=workdir, user=user))
    )
    result.files.append(ServiceFile(workdir / ".env", env.encode(), 0o600, True, shown))
    result.dirs += [(workdir, 0o700), (data, 0o700), (data / "logs", 0o700)]
    runner = f"*{LOCAL_SERVICE}" if system else (user or "%USERNAME%")
    owners = [f"*{SYSTEM}:(OI)(CI)F", f"*{ADMINISTRATORS}:(OI)(CI)F"] if system else []
    reads, writes = ("(OI)(CI)R", "(OI)(CI)M") if system else ("(OI)(CI)F", "(OI)(CI)F")
    result.commands += [
        # the keys: readable by the account that runs the task (and administrators) only
        ["icacls", str(workdir), "/inheritance:r", "/grant:r", *owners, f"{runner}:{reads}"],
        ["icacls", str(data), "/inheritance:r", "/grant:r", *owners, f"{runner}:{writes}"],
        ["schtasks", "/Create", "/TN", TASK, "/XML", str(xml_path), "/F"],
        ["schtasks", "/Run", "/TN", TASK],
    ]
    result.undo += [["schtasks", "/End", "/TN", TASK], ["schtasks", "/Delete", "/TN", TASK, "/F"]]
    result.status = ["schtasks", "/Query", "/TN", TASK, "/V", "/FO", "LIST"]
    result.log_files = [log_file]
    if not system:
        result.notes.append(
            "the task starts when you log on; for a gateway at boot, install with --system "
            "from an administrator's prompt (it then runs as LOCAL SERVICE)"
        )
    return result
