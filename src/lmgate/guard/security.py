"""The guard's parts for one gateway, built from settings: keys, limits, damping, CORS.

`wrap` stacks the ASGI layers in their fixed order (CORS outside, then the guard, then input
limits, so a body is read only once its request is admitted); `hooks` are the proxy-side
checks in the order they refuse: a model name that cannot be one, malformed body, forbidden
model, tools the key may not have the upstream use, over a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmgate.asgi import ASGIApp
from lmgate.exchange import Observer
from lmgate.guard.allowlist import NetworkSet
from lmgate.guard.auth import Access, GuardMiddleware
from lmgate.guard.budget import BodyBudget
from lmgate.guard.cors import with_cors
from lmgate.guard.daily_tokens import DailyTokens
from lmgate.guard.damping import Damper
from lmgate.guard.hostnames import HostNames
from lmgate.guard.keys import KeyRegistry
from lmgate.guard.limits import InputLimits, JsonDepthLimit
from lmgate.guard.model_access import ModelAccess
from lmgate.guard.model_name import ModelNameCheck
from lmgate.guard.origin import OriginPolicy
from lmgate.guard.paths import Scope as KeyScope
from lmgate.guard.ratelimit import RateLimiter
from lmgate.guard.shared_limits import SharedRateLimiter
from lmgate.guard.tools import ToolAccess
from lmgate.hooks import ProxyHook
from lmgate.observe.events import EventBus
from lmgate.settings import Settings
from lmgate.store.db import Database
from lmgate.store.keys import KeyStore, load_secret
from lmgate.workers.slot import Worker


def bootstrap_keys(settings: Settings) -> list[tuple[str, KeyScope, str]]:
    """Keys from settings: LMGATE_ADMIN_KEY (or GATEWAY_API_KEY), LMGATE_METRICS_KEY and
    LMGATE_API_KEYS."""
    keys: list[tuple[str, KeyScope, str]] = []
    if settings.admin_key is not None:
        keys.append(("admin", KeyScope.ADMIN, settings.admin_key.get_secret_value()))
    if settings.metrics_key is not None:
        keys.append(("metrics", KeyScope.METRICS, settings.metrics_key.get_secret_value()))
    keys += [
        (f"api-key-{i}", KeyScope.INFERENCE, k.get_secret_value())
        for i, k in enumerate(settings.api_keys, 1)
    ]
    return keys


@dataclass(slots=True)
class Security:
    settings: Settings
    keys: KeyRegistry
    store: KeyStore
    damper: Damper
    limiter: RateLimiter
    access: Access
    daily: DailyTokens

    @classmethod
    def build(cls, settings: Settings, db: Database, worker: Worker | None = None) -> Security:
        """With several workers, limits are shared through the run directory; else in memory.

        Bad-key damping stays per worker: a guesser spread over N workers gets at most N
        times the allowance before every one of them blocks it.
        """
        secret = load_secret(settings.data_dir)
        limiter = RateLimiter()
        if worker is not None and worker.shared and worker.run_dir is not None:
            limiter = SharedRateLimiter(worker.run_dir / "limits.sqlite3")
        return cls(
            settings=settings,
            keys=KeyRegistry(
                secret,
                bootstrap_keys(settings),
                db.path,
                loads_default=settings.key_loads_default == "allow",
            ),
            store=KeyStore(db, secret),
            damper=Damper(
                limit=settings.auth_fail_limit,
                block_s=settings.auth_block_seconds,
                exempt=NetworkSet(settings.auth_fail_exempt),
            ),
            limiter=limiter,
            daily=DailyTokens(db),
            access=Access(
                allow=NetworkSet(settings.allow),
                admin_allow=NetworkSet(settings.admin_allow),
                trusted_proxies=NetworkSet(settings.trusted_proxies),
                forwarded_header=settings.forwarded_header.lower().encode(),
                health_public=not settings.require_auth_for_health,
                metrics_allow=(
                    NetworkSet(settings.metrics_allow) if settings.metrics_allow else None
                ),
            ),
        )

    def wrap(self, app: ASGIApp, bus: EventBus | None) -> ASGIApp:
        settings = self.settings
        limited = InputLimits(
            app,
            max_body_bytes=settings.max_body_bytes,
            body_timeout=settings.body_timeout,
            budget=BodyBudget(settings.body_memory_limit),  # per process, as with --workers
            health_public=not settings.require_auth_for_health,
        )
        guarded = GuardMiddleware(
            limited,
            keys=self.keys,
            access=self.access,
            damper=self.damper,
            bus=bus,
            origin=OriginPolicy(HostNames.build(settings.host, settings.allowed_hosts)),
        )
        return with_cors(guarded, settings.cors_origins)

    def hooks(self) -> list[ProxyHook]:
        return [
            ModelNameCheck(),  # first: a refused name must be off the exchange before anything
            JsonDepthLimit(self.settings.max_json_depth),
            ModelAccess(),
            ToolAccess(),
            self.limiter,
            self.daily,  # keys without a daily budget pass at once
        ]

    def observers(self) -> list[Observer]:
        return [self.limiter, self.daily]

    def close(self) -> None:
        self.keys.close()
        if isinstance(self.limiter, SharedRateLimiter):
            self.limiter.close()
