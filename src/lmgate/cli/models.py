"""`lmgate models list|load|unload|activate`: operate a running gateway without curl."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

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


@models_app.command("load")
def load(
    model: str,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    context_length: Annotated[int | None, typer.Option(help="Context length.")] = None,
    flash_attention: Annotated[bool | None, typer.Option(help="Flash attention.")] = None,
    eval_batch_size: Annotated[int | None, typer.Option(help="Evaluation batch size.")] = None,
    gpu_ratio: Annotated[float | None, typer.Option(help="GPU offload ratio 0-1.")] = None,
    new_instance: Annotated[bool, typer.Option(help="Load another instance.")] = False,
    activate: Annotated[
        bool | None,
        typer.Option(
            "--activate/--no-activate",
            help="Make it the active model [default: only when no other model is active].",
        ),
    ] = None,
) -> None:
    """Load MODEL upstream (or, on older LM Studio, store it and print the manual steps)."""
    config: dict[str, Any] = {
        "contextLength": context_length,
        "flashAttention": flash_attention,
        "evalBatchSize": eval_batch_size,
    }
    if gpu_ratio is not None:
        config["gpu"] = {"ratio": gpu_ratio}
    body = {
        "modelKey": model,
        **({"activate": activate} if activate is not None else {}),
        "newInstance": new_instance,
        "loadConfig": {k: v for k, v in config.items() if v is not None},
    }
    data = call_gateway(url, admin_key, "POST", "/admin/models/load", body)
    console.print(f"[green]{data['status']}[/green]: {data.get('message', '')}")
    for field, reason in (data.get("notApplied") or {}).items():
        console.print(f"[yellow]not applied[/yellow] {field}: {reason}")
    for step, line in (data.get("workflow") or {}).items():
        console.print(f"{step}: {line}")


@models_app.command("unload")
def unload(
    model: Annotated[str | None, typer.Argument(help="Model key.")] = None,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    instance: Annotated[str | None, typer.Option(help="One instance id.")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every loaded model.")] = False,
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
    data = call_gateway(url, admin_key, "POST", "/admin/models/unload", body)
    console.print(f"[green]{data['status']}[/green]: {data.get('message', '')}")


@models_app.command("activate")
def activate(
    model: str,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    temperature: Annotated[float | None, typer.Option(help="Default temperature.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Default max tokens (-1: none).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Default top-p.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Default top-k.")] = None,
    force: Annotated[
        bool, typer.Option(help="Activate even a model the upstream does not list.")
    ] = False,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="Model for embeddings requests that name none ('' clears it)."),
    ] = None,
) -> None:
    """Make MODEL the active model, optionally with default sampling parameters."""
    defaults = {"temperature": temperature, "maxTokens": max_tokens, "topP": top_p, "topK": top_k}
    given = {k: v for k, v in defaults.items() if v is not None}
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
