"""`lmgate models list|load|unload|activate|profile|download`: operate a running gateway
without curl. Every command takes `--json` (`cli/output.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from lmgate.cli.option_group import option_group
from lmgate.cli.output import json_output, record
from lmgate.cli.tables import pairs, print_table, text

models_app = typer.Typer(help="Manage models through a running gateway (admin key needed).")
console = Console()

Url = Annotated[
    str,
    typer.Option(envvar="LMGATE_URL", help="The gateway's base URL."),
]
Key = Annotated[
    str | None,
    typer.Option(envvar="LMGATE_ADMIN_KEY", help="Admin key (default: LMGATE_ADMIN_KEY)."),
]


def call_gateway(url: str, key: str | None, method: str, path: str, body: Any = None) -> Any:
    """One admin API call; any failure ends the command with a line that names the fix."""
    import httpx  # here, not at the top: `lmgate serve` loads this module and never calls it

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.request(
            method, url.rstrip("/") + path, json=body, headers=headers, timeout=900
        )
    except httpx.HTTPError as exc:
        typer.echo(f"lmgate: cannot reach the gateway at {url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        data = resp.json()
    except ValueError:
        data = {"error": {"message": resp.text[:300]}}
    record(data)
    if resp.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        message = error.get("message") if isinstance(error, dict) else error
        typer.echo(f"lmgate: {resp.status_code}: {message}", err=True)
        if resp.status_code == 401:
            given = "no admin key was given" if not key else "the admin key given was refused"
            typer.echo(
                f"lmgate: {given}: pass the gateway's admin key with --admin-key KEY "
                "or set LMGATE_ADMIN_KEY",
                err=True,
            )
        raise typer.Exit(1)
    return data


Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@models_app.command("list")
def list_models(
    url: Url = "http://127.0.0.1:1235", admin_key: Key = None, as_json: Json = False
) -> None:
    """Every model the upstream knows: loaded instances, active model, stored profile."""
    data = call_gateway(url, admin_key, "GET", "/admin/models")
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    rows = []
    for model in data["models"]:
        instances = "\n".join(
            f"{i['id']} ({pairs(i.get('config') or {})})" for i in model.get("instances", [])
        )
        profile = model.get("profile") or {}
        rows.append(
            [
                model["key"],
                text(model.get("type")),
                instances or "-",
                "yes" if model.get("active") else "",
                pairs(
                    {**(profile.get("loadConfig") or {}), **(profile.get("defaultInference") or {})}
                ),
            ]
        )
    columns = ("model", "type", "loaded instances", "active", "profile")
    print_table(f"models ({data.get('upstream')})", columns, rows, keep=("model",))
    if data.get("error"):
        console.print(f"[yellow]upstream: {data['error']}[/yellow]")


Opt = typer.Option


def load_config_of(
    *,
    context_length: int | None,
    gpu: str | None,
    gpu_layers: int | None,
    cpu_threads: int | None,
    rope_base: float | None,
    rope_scale: float | None,
    parallel: int | None,
    kv_cache_quant: str | None,
    flash_attention: bool | None,
    eval_batch_size: int | None,
    keep_in_memory: bool | None,
    mmap: bool | None,
    seed: int | None,
) -> dict[str, Any]:
    """The `loadConfig` the options ask for; the gateway validates it."""
    ratio: float | str | None = gpu
    if gpu is not None and gpu not in ("max", "off"):
        try:
            ratio = float(gpu)
        except ValueError:
            typer.echo("lmgate: --gpu takes a ratio from 0 to 1, 'max' or 'off'", err=True)
            raise typer.Exit(2) from None
    config: dict[str, Any] = {
        "contextLength": context_length,
        "gpu": {k: v for k, v in (("ratio", ratio), ("layers", gpu_layers)) if v is not None},
        "cpuThreads": cpu_threads,
        "ropeFrequencyBase": rope_base,
        "ropeFrequencyScale": rope_scale,
        "parallel": parallel,
        "kvCacheQuantK": kv_cache_quant,
        "kvCacheQuantV": kv_cache_quant,
        "flashAttention": flash_attention,
        "evalBatchSize": eval_batch_size,
        "keepModelInMemory": keep_in_memory,
        "tryMmap": mmap,
        "seed": seed,
    }
    return {k: v for k, v in config.items() if v is not None and v != {}}


@models_app.command("load")
def load(
    model: str,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    context_length: Annotated[int | None, Opt(help="Context length (tokens).")] = None,
    gpu: Annotated[str | None, Opt(help="GPU offload: a ratio 0-1, 'max' or 'off'.")] = None,
    gpu_ratio: Annotated[float | None, Opt(hidden=True)] = None,
    gpu_layers: Annotated[int | None, Opt(help="Layers to offload (as a ratio).")] = None,
    cpu_threads: Annotated[int | None, Opt(help="CPU threads, per request.")] = None,
    rope_base: Annotated[float | None, Opt(help="RoPE frequency base.")] = None,
    rope_scale: Annotated[float | None, Opt(help="RoPE frequency scale.")] = None,
    ttl: Annotated[int | None, Opt(help="Unload after this many idle seconds.")] = None,
    identifier: Annotated[str | None, Opt(help="The loaded instance's name.")] = None,
    parallel: Annotated[int | None, Opt(help="Predictions at once.")] = None,
    kv_cache_quant: Annotated[
        str | None, Opt(help="KV cache quantization (f16, q8_0, q4_0...), K and V.")
    ] = None,
    flash_attention: Annotated[bool | None, Opt(help="Flash attention.")] = None,
    eval_batch_size: Annotated[int | None, Opt(help="Evaluation batch size.")] = None,
    keep_in_memory: Annotated[
        bool | None, Opt("--keep-in-memory/--no-keep-in-memory", help="Keep the model in RAM.")
    ] = None,
    mmap: Annotated[bool | None, Opt("--mmap/--no-mmap", help="Memory-map the file.")] = None,
    seed: Annotated[int | None, Opt(help="Load-time seed.")] = None,
    surface: Annotated[str | None, Opt(help="Load through: sdk, lms or rest.")] = None,
    new_instance: Annotated[bool, Opt(help="Load another instance.")] = False,
    upstream: Annotated[
        str | None, Opt(help="Load on this upstream [default: placed by the scheduler's rules].")
    ] = None,
    activate: Annotated[
        bool | None,
        Opt(
            "--activate/--no-activate",
            help="Make it the active model [default: only when no other model is active].",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Load MODEL upstream through the surface that applies the most of what is asked (or, on
    an upstream that cannot load, store it and print the manual steps)."""
    config = load_config_of(
        context_length=context_length,
        gpu=gpu if gpu is not None else (str(gpu_ratio) if gpu_ratio is not None else None),
        gpu_layers=gpu_layers,
        cpu_threads=cpu_threads,
        rope_base=rope_base,
        rope_scale=rope_scale,
        parallel=parallel,
        kv_cache_quant=kv_cache_quant,
        flash_attention=flash_attention,
        eval_batch_size=eval_batch_size,
        keep_in_memory=keep_in_memory,
        mmap=mmap,
        seed=seed,
    )
    if ttl is not None:
        config["ttl"] = ttl
    body: dict[str, Any] = {"modelKey": model, "newInstance": new_instance, "loadConfig": config}
    extras = {
        "activate": activate,
        "identifier": identifier,
        "surface": surface,
        "upstream": upstream,
    }
    body.update({k: v for k, v in extras.items() if v is not None})
    data = call_gateway(url, admin_key, "POST", "/admin/models/load", body)
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    on = f" (on {data['upstream']})" if data.get("upstream") else ""
    console.print(f"[green]{data['status']}[/green]: {data.get('message', '')}{on}")
    for field, value in (data.get("applied") or {}).items():
        how = (data.get("appliedAs") or {}).get(field)
        console.print(f"applied {field} = {value}" + (f" ({how})" if how else ""))
    for field, reason in (data.get("notApplied") or {}).items():
        console.print(f"[yellow]not applied[/yellow] {field}: {reason}")
    for step, line in (data.get("workflow") or {}).items():
        console.print(f"{step}: {line}")


@models_app.command("unload")
@json_output
def unload(
    model: Annotated[str | None, typer.Argument(help="Model key.")] = None,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    instance: Annotated[str | None, typer.Option(help="One instance id.")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every loaded model.")] = False,
    upstream: Annotated[
        str | None, typer.Option(help="Only on this upstream [default: wherever it is loaded].")
    ] = None,
) -> None:
    """Unload MODEL, one --instance, or --all."""
    if sum([model is not None, instance is not None, all_models]) != 1:
        typer.echo("lmgate: give exactly one of MODEL, --instance or --all", err=True)
        raise typer.Exit(2)
    body: dict[str, Any] = (
        {"all": True}
        if all_models
        else {"instanceId": instance}
        if instance
        else {"modelKey": model}
    )
    if upstream is not None:
        body["upstream"] = upstream
    data = call_gateway(url, admin_key, "POST", "/admin/models/unload", body)
    where = ", ".join(data.get("unloadedOn") or ())
    console.print(
        f"[green]{data['status']}[/green]: {data.get('message', '')}"
        + (f" (on {where})" if where else "")
    )


@dataclass(frozen=True)
class InferenceOptions:
    """The seven inference defaults `activate` and `profile set` take."""

    temperature: Annotated[float | None, typer.Option(help="Default temperature (0-2).")] = None
    max_tokens: Annotated[int | None, typer.Option(help="Default max tokens (-1: no limit).")] = (
        None
    )
    top_p: Annotated[float | None, typer.Option(help="Default top-p (0-1).")] = None
    top_k: Annotated[int | None, typer.Option(help="Default top-k.")] = None
    repeat_penalty: Annotated[float | None, typer.Option(help="Default repeat penalty (> 0).")] = (
        None
    )
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="A default stop string (repeat for more).")
    ] = None
    stream: Annotated[
        bool | None, typer.Option("--stream/--no-stream", help="Stream answers by default.")
    ] = None

    def given(self) -> dict[str, Any]:
        """The defaults given on the command line, in the API's names."""
        given = {
            "temperature": self.temperature,
            "maxTokens": self.max_tokens,
            "topP": self.top_p,
            "topK": self.top_k,
            "repeatPenalty": self.repeat_penalty,
            "stopStrings": self.stop or None,
            "stream": self.stream,
        }
        return {k: v for k, v in given.items() if v is not None}


_INFERENCE = InferenceOptions()  # the commands' default; `option_group` fills it from the flags


@models_app.command("activate")
@json_output
@option_group("inference", InferenceOptions)
def activate(
    model: str,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    inference: InferenceOptions = _INFERENCE,
    force: Annotated[
        bool, typer.Option(help="Activate even a model the upstream does not list.")
    ] = False,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="Model for embeddings requests that name none ('' clears it)."),
    ] = None,
) -> None:
    """Make MODEL the active model, optionally with default sampling parameters."""
    given = inference.given()
    body: dict[str, Any] = {"modelKey": model}
    if given:
        body["defaultInference"] = given
    if force:
        body["force"] = True
    if embedding_model is not None:
        body["defaultEmbeddingModel"] = embedding_model or None
    data = call_gateway(url, admin_key, "POST", "/admin/models/activate", body)
    console.print(f"[green]{data['status']}[/green]: {data['message']}")
    console.print(f"default inference: {pairs(data.get('defaultInference') or {})}")
    if data.get("defaultEmbeddingModel"):
        console.print(f"default embedding model: {data['defaultEmbeddingModel']}")
    if data.get("warning"):
        console.print(f"[yellow]warning[/yellow]: {data['warning']}")


profile_app = typer.Typer(
    help="A model's stored profile: load config, inference defaults and scheduling policy."
)
models_app.add_typer(profile_app, name="profile")


def _profile_path(model: str) -> str:
    from urllib.parse import quote

    return f"/admin/models/{quote(model, safe='/@')}/profile"


def _show_profile(data: dict[str, Any]) -> None:
    console.print(f"[bold]{data.get('modelKey')}[/bold]", highlight=False)
    ttl = data.get("ttl")
    console.print(
        f"slots {text(data.get('slots'))}, idle ttl {'never' if ttl == 0 else text(ttl)}, "
        f"pinned {text(bool(data.get('pinned')))}",
        highlight=False,
    )
    console.print(f"load config: {pairs(data.get('loadConfig') or {})}", highlight=False)
    console.print(f"defaults: {pairs(data.get('defaultInference') or {})}", highlight=False)


@profile_app.command("get")
@json_output
def profile_get(model: str, url: Url = "http://127.0.0.1:1235", admin_key: Key = None) -> None:
    """MODEL's stored profile."""
    _show_profile(call_gateway(url, admin_key, "GET", _profile_path(model)))


@profile_app.command("set")
@json_output
@option_group("inference", InferenceOptions)
def profile_set(
    model: str,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    context_length: Annotated[int | None, typer.Option(help="Context length.")] = None,
    flash_attention: Annotated[bool | None, typer.Option(help="Flash attention.")] = None,
    eval_batch_size: Annotated[int | None, typer.Option(help="Evaluation batch size.")] = None,
    gpu_ratio: Annotated[float | None, typer.Option(help="GPU offload ratio 0-1.")] = None,
    ttl: Annotated[int | None, typer.Option(help="Idle seconds before an unload.")] = None,
    inference: InferenceOptions = _INFERENCE,
) -> None:
    """Store MODEL's profile (it replaces the stored one): used when lmgate loads MODEL, and
    its defaults for requests naming MODEL."""
    config: dict[str, Any] = {
        "contextLength": context_length,
        "flashAttention": flash_attention,
        "evalBatchSize": eval_batch_size,
        "ttl": ttl,
        "gpu": {"ratio": gpu_ratio} if gpu_ratio is not None else None,
    }
    load_config = {k: v for k, v in config.items() if v is not None}
    defaults = inference.given()
    body = {"loadConfig": load_config or None, "defaultInference": defaults or None}
    _show_profile(call_gateway(url, admin_key, "PUT", _profile_path(model), body))


@profile_app.command("delete")
@json_output
def profile_delete(model: str, url: Url = "http://127.0.0.1:1235", admin_key: Key = None) -> None:
    """Forget MODEL's stored profile."""
    data = call_gateway(url, admin_key, "DELETE", _profile_path(model))
    console.print(f"[green]{data['status']}[/green]: profile of {model}", highlight=False)


ENDED = frozenset({"completed", "already_downloaded", "failed", "cancelled"})


def _follow(url: str, key: str | None, job: dict[str, Any]) -> dict[str, Any]:
    """Poll the download until it ends, with a progress bar (on stderr with --json)."""
    import time

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(job["model"], total=job.get("totalBytes"))
        while job["status"] not in ENDED:
            time.sleep(0.5)
            job = call_gateway(url, key, "GET", f"/admin/models/downloads/{job['id']}")
            bar.update(task, total=job.get("totalBytes"), completed=job.get("downloadedBytes") or 0)
    return job


def _ended(job: dict[str, Any]) -> None:
    status = job["status"]
    colour = "green" if status in ("completed", "already_downloaded") else "red"
    line = f"[{colour}]{status}[/{colour}]: {job['model']}"
    if job.get("error") or job.get("message"):
        line += f" ({job.get('error') or job.get('message')})"
    console.print(line, highlight=False)
    if colour == "red":
        raise typer.Exit(1)


@models_app.command("download")
@json_output
def download(
    model: Annotated[
        str, typer.Argument(help="A catalog id (qwen/qwen3-4b) or a Hugging Face URL.")
    ],
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    quantization: Annotated[
        str | None, typer.Option(help="Quantization, for Hugging Face URLs (Q4_K_M...).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow it to its end with a progress bar.")] = False,
    upstream: Annotated[
        str | None, typer.Option(help="Download on this upstream [default: one that can].")
    ] = None,
) -> None:
    """Have LM Studio (0.4+) download MODEL; --wait follows it to its end."""
    body = {"model": model, **({"quantization": quantization} if quantization else {})}
    if upstream is not None:
        body["upstream"] = upstream
    job = call_gateway(url, admin_key, "POST", "/admin/models/download", body)
    if not wait and job["status"] not in ENDED:
        console.print(
            f"[green]{job['status']}[/green]: {job['model']} as download {job['id']} "
            + (f"on {job['upstream']} " if job.get("upstream") else "")
            + "(follow it with `lmgate models downloads`)",
            highlight=False,
        )
        return
    try:
        job = _follow(url, admin_key, job)
    except KeyboardInterrupt:
        console.print(f"still downloading in LM Studio: {job['id']}", highlight=False)
        raise typer.Exit(130) from None
    _ended(job)


@models_app.command("downloads")
@json_output
def downloads(url: Url = "http://127.0.0.1:1235", admin_key: Key = None) -> None:
    """The downloads the gateway follows, and the last ones that ended."""
    data = call_gateway(url, admin_key, "GET", "/admin/models/downloads")
    rows = [
        [
            j["id"],
            j["model"],
            j["status"],
            text(f"{round(j['progress'] * 100)}%" if j.get("progress") is not None else None),
            text(j.get("error") or j.get("message")),
        ]
        for j in data["downloads"]
    ]
    columns = ("id", "model", "status", "done", "note")
    print_table("downloads", columns, rows, keep=("id", "model"))


@models_app.command("download-cancel")
@json_output
def download_cancel(
    download_id: Annotated[str, typer.Argument(help="The download's id (dl_...).")],
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
) -> None:
    """Stop following a download (LM Studio's API cannot stop the transfer itself)."""
    job = call_gateway(url, admin_key, "DELETE", f"/admin/models/downloads/{download_id}")
    console.print(f"[yellow]{job['status']}[/yellow]: {job['message']}", highlight=False)
