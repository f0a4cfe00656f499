"""Every endpoint and dependency of the HTTP services is a coroutine.

FastAPI runs a plain function (endpoint or dependency) in its thread pool: a
thread handoff on every request. One such dependency cost the gateway's VRRP
intake 10% of its time and most of its p99 (havip bench intake), so none may
come back unnoticed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from services.forwarder.app import create_app as create_forwarder
from services.gateway.app import create_app as create_gateway
from services.runtime.settings import Settings


def dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from dependencies(sub)


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # FastAPI keeps an included router whole (since 0.16x); before, its routes were copied in.
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from api_routes(included.routes)


def is_coroutine(call: Callable[..., Any] | None) -> bool:
    # A dependency may be an instance with an async __call__ (HTTPBearer).
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


@pytest.mark.parametrize(
    ("create_app", "minimum_routes"), [(create_gateway, 15), (create_forwarder, 4)], ids=["gateway", "forwarder"]
)
def test_no_endpoint_or_dependency_runs_in_a_thread(
    create_app: Callable[[Settings], FastAPI], minimum_routes: int
) -> None:
    app = create_app(Settings())
    routes = list(api_routes(app.routes))
    assert len(routes) >= minimum_routes, "the routes were not found: has FastAPI changed how it keeps them?"
    blocking = [
        f"{route.path} {getattr(dependant.call, '__qualname__', dependant.call)}"
        for route in routes
        for dependant in (route.dependant, *dependencies(route.dependant))
        if not is_coroutine(dependant.call)
    ]
    assert blocking == []
