"""What request handlers share, opened once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import Request

from services.gateway.broker import BrokerLink
from services.gateway.commands import CommandSubmitter
from services.gateway.directory import AgentDirectory
from services.gateway.throttle import Throttle
from services.runtime.settings import Settings


@dataclass(frozen=True)
class GatewayContext:
    settings: Settings
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    commands: CommandSubmitter
    broker: BrokerLink
    vrrp_topic: str
    # Agent tokens and attachments, in memory: VRRP reports need no database round trip.
    directory: AgentDirectory
    # Request rates per token, counted by this replica alone.
    throttle: Throttle = field(default_factory=Throttle)


def gateway_context(request: Request) -> GatewayContext:
    context: GatewayContext = request.app.state.gateway
    return context
