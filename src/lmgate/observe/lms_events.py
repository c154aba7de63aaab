"""One line of `lms log stream --json`, turned into typed debug-stream events.

Each line is one of LM Studio's diagnostics events, `{"timestamp": ms, "data": {...}}` with
`data.type` (lms source, `src/subcommands/log.ts`; SDK schema `diagnosticsLogEvent`):

  llm.prediction.input    modelIdentifier, modelPath, input (the whole formatted prompt)
  llm.prediction.output   modelIdentifier, output (the whole answer), stats?: tokensPerSecond,
                          timeToFirstTokenSec, promptTokensCount, predictedTokensCount,
                          totalTokensCount, stopReason, numGpuLayers, draft token counts
  server.log              content: a line of LM Studio's server log
  runtime.log             level, message, engineName, engineVersion, modelIdentifier?, pid?

Prompts and answers are never published unless prompt logging is on (then redacted and cut,
by `clean`). Server and runtime lines go through the same allowlist as the log files
(`lmstudio_log_parse.py`): a line is shown only in a shape known to carry no text of a
request; prompt-processing progress and model-load life-cycle lines become their own events.
Where the shape of a load-progress line is not known from LM Studio's sources, the one read
here (`loading progress: 45%`, optionally naming the model) is an assumption; a line of
another shape is simply not turned into a progress event.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from lmgate.observe.lmstudio_log_parse import LogEntry, fields, start_of

Clean = Callable[[str], str]
Event = tuple[str, dict[str, Any]]
_ID = r"[\w./@:+-]{1,200}"
_LOAD_PROGRESS = re.compile(
    rf"(?:model )?load(?:ing)?(?: model)?(?: (?P<model>{_ID}))?:? progress:? "
    r"(?P<pct>\d{1,3}(?:\.\d+)?)\s*%",
    re.IGNORECASE,
)
_LOAD_START = re.compile(rf"(?:jit )?loading(?: model)?:? (?P<model>{_ID})\.{{0,3}}", re.IGNORECASE)
_LOAD_END = re.compile(
    rf"(?:model loaded(?: successfully)?|loaded(?: model)?):? (?P<model>{_ID})\.?", re.IGNORECASE
)
_STATS = {
    "tokensPerSecond": "tokensPerSecond",
    "timeToFirstTokenSec": "timeToFirstTokenSeconds",
    "promptTokensCount": "promptTokens",
    "predictedTokensCount": "predictedTokens",
    "totalTokensCount": "totalTokens",
    "numGpuLayers": "numGpuLayers",
    "totalDraftTokensCount": "draftTokens",
    "acceptedDraftTokensCount": "acceptedDraftTokens",
    "rejectedDraftTokensCount": "rejectedDraftTokens",
    "ignoredDraftTokensCount": "ignoredDraftTokens",
}


def number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def short(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def prediction_stats(stats: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The numbers of a stats object under lmgate's names; anything else is left out."""
    out: dict[str, Any] = {}
    for wire, name in names.items():
        value = number(stats.get(wire))
        if value is not None:
            out[name] = value
    return out


def _output(data: dict[str, Any], clean: Clean | None) -> Event:
    stats = data.get("stats")
    fields_ = prediction_stats(stats, _STATS) if isinstance(stats, dict) else {}
    if isinstance(stats, dict) and (reason := short(stats.get("stopReason"), 50)):
        fields_["stopReason"] = reason
    body: dict[str, Any] = {"model": short(data.get("modelIdentifier")), **fields_}
    if clean is not None and isinstance(data.get("output"), str):
        body["output"] = clean(data["output"])
    return "lmstudio_prediction_stats", body


def _log_line(content: str, level: str | None, clean: Clean | None) -> list[Event]:
    entry = start_of(content) or LogEntry("", level, [], [content])
    out = fields(entry, clean)
    events: list[Event] = [("lmstudio_log", out)]
    model = out.get("model")
    if isinstance(out.get("progress"), float):
        events.append(
            ("lmstudio_prompt_progress", {"model": model, "progress": out["progress"] / 100.0})
        )
    line = "\n".join(entry.lines).strip()
    if (found := _LOAD_PROGRESS.fullmatch(line)) is not None:
        progress = min(1.0, float(found["pct"]) / 100.0)
        load = {"model": found["model"] or model, "phase": "progress", "progress": progress}
        events.append(("lmstudio_model_load_progress", load))
    elif (found := _LOAD_START.fullmatch(line) or _LOAD_END.fullmatch(line)) is not None:
        phase = "start" if found.re is _LOAD_START else "end"
        load = {"model": found["model"], "phase": phase, "progress": 1.0 if phase == "end" else 0.0}
        events.append(("lmstudio_model_load_progress", load))
    return events


def events_of(line: Any, clean: Clean | None) -> list[Event]:
    """The events one parsed JSON line stands for (none for a shape not known here)."""
    data = line.get("data") if isinstance(line, dict) else None
    if not isinstance(data, dict):
        return []
    kind = data.get("type")
    stamp = number(line.get("timestamp"))
    found: list[Event] = []
    if kind == "llm.prediction.output":
        found = [_output(data, clean)]
    elif kind == "llm.prediction.input" and clean is not None:
        text = data.get("input")
        prompt = {"model": short(data.get("modelIdentifier")), "input": clean(str(text or ""))}
        found = [("lmstudio_prediction_input", prompt)]
    elif kind == "server.log" and isinstance(data.get("content"), str):
        found = _log_line(data["content"], None, clean)
    elif kind == "runtime.log" and isinstance(data.get("message"), str):
        level = short(data.get("level"), 20)
        found = _log_line(data["message"], level.upper() if level else None, clean)
        for _, body in found:
            body.setdefault("model", short(data.get("modelIdentifier")))
            body["engine"] = short(data.get("engineName"), 100)
    for _, body in found:
        body["origin"] = "lms"
        if body.get("logTime") is None:
            body["logTime"] = round(stamp / 1000.0, 3) if stamp is not None else None
    return found
