"""A small inventory for tests: one tenant, one VPC, two vSwitches, many instances."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.messages import InstanceChanged, InstanceStatus, Message, VSwitchChanged
from services.runtime.kafka import new_producer, topic_name
from services.runtime.settings import Settings

TENANT = "tenant-t"


def vswitch(vswitch_id: str = "vsw-a", cidr: str = "10.1.0.0/24", revision: int = 1) -> VSwitchChanged:
    return VSwitchChanged(
        vswitch_id=vswitch_id, tenant_id=TENANT, vpc_id="vpc-t", zone_id="zone-1", cidr=cidr, revision=revision
    )


def instance(
    n: int,
    *,
    status: InstanceStatus = InstanceStatus.RUNNING,
    vswitch_id: str = "vsw-a",
    revision: int = 1,
    host: str | None = None,
) -> InstanceChanged:
    return InstanceChanged(
        instance_id=f"i-{n}",
        tenant_id=TENANT,
        vpc_id="vpc-t",
        vswitch_id=vswitch_id,
        private_ip=f"10.1.0.{100 + n}",
        status=status,
        host_id=host or f"host-{n % 3}",
        revision=revision,
    )


def inventory(instances: int) -> list[Message]:
    return [vswitch(), *(instance(n) for n in range(instances))]


def key_of(message: Message) -> str:
    for field in ("vswitch_id", "instance_id", "eni_id", "eip_id"):
        if field in type(message).model_fields and not (
            field == "instance_id" and "eni_id" in type(message).model_fields
        ):
            return str(getattr(message, field))
    raise ValueError(message)


class Publisher:
    """Puts messages on the system's topics, as the platform and the gateway would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer = new_producer(settings)

    async def __aenter__(self) -> Publisher:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(self, topic: topics.Topic, key: str, message: Message | bytes) -> None:
        value = message if isinstance(message, bytes) else topics.encode(message)
        await self.producer.send_and_wait(topic_name(self.settings, topic), key=key.encode(), value=value)

    async def inventory(self, messages: list[Message]) -> None:
        for message in messages:
            await self.send(topics.INVENTORY, key_of(message), message)
