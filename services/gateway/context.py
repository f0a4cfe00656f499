"""What request handlers share, opened once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import Request

from services.gateway.broker import BrokerLink
from services.gateway.commands import CommandSubmitter
from services.gateway.directory import AgentDirectory
from services.gateway.renewals import ClaimMemory, RenewalLane
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
    # Lease renewals go to PostgreSQL, in batches; state changes to vrrp.events (renewals.py).
    renewals: RenewalLane
    # Request rates per token, counted by this replica alone.
    throttle: Throttle = field(default_factory=Throttle)
    # What this replica last saw of each claim: how it tells a renewal from a state change.
    claims: ClaimMemory = field(default_factory=ClaimMemory)


async def gateway_context(request: Request) -> GatewayContext:
    # A coroutine on purpose: FastAPI runs a plain function dependency in its thread pool, a
    # thread handoff on every request (10% of a VRRP report's time, and its p99, under load).
    context: GatewayContext = request.app.state.gateway
    return context
