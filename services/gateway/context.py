"""What request handlers share, opened once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import Request

from services.gateway.commands import CommandSubmitter
from services.runtime.settings import Settings


@dataclass(frozen=True)
class GatewayContext:
    settings: Settings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    commands: CommandSubmitter
    vrrp_topic: str


def gateway_context(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.gateway
    return context
