"""The parts of one running gateway, built once by `create_app` and shared by its routes."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from lmgate.observe.events import EventBus
from lmgate.observe.inference_events import InferenceEvents
from lmgate.observe.prometheus import PrometheusMetrics
from lmgate.observe.stats import Stats
from lmgate.settings import Settings
from lmgate.store.db import Database
from lmgate.store.state import StateStore
from lmgate.upstream.client import UpstreamClient


@dataclass(slots=True)
class Gateway:
    settings: Settings
    db: Database
    state: StateStore
    upstream: UpstreamClient
    bus: EventBus
    stats: Stats
    prometheus: PrometheusMetrics
    inference_events: InferenceEvents

    @classmethod
    def build(cls, settings: Settings) -> Gateway:
        db = Database(settings.data_dir)
        bus = EventBus()
        return cls(
            settings=settings,
            db=db,
            state=StateStore(db),
            upstream=UpstreamClient(settings),
            bus=bus,
            stats=Stats(),
            prometheus=PrometheusMetrics(),
            inference_events=InferenceEvents(bus),
        )


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw
