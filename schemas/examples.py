"""One complete example of every message on every topic: the one place they are written.

`python -m schemas.export` embeds them in the JSON Schema files (`examples`) and in docs/topics.md;
tests/unit/test_topic_contract.py checks that each parses, spells out every field, and is what the
services would write themselves.

They tell one story: tenant `tenant-acme` makes HAVIP `havip-0a1b2c3d` (10.20.0.100) in vSwitch
`vsw-4k2m`, attaches instances `i-0a11` and `i-0b22` (the latter through ENI `eni-7c33`), gives it
EIP `eip-5d44` (203.0.113.25), and `i-0a11` becomes MASTER.
"""

from __future__ import annotations

from typing import Any

Example = dict[str, Any]

TENANT = "tenant-acme"
HAVIP = "havip-0a1b2c3d"

INVENTORY: tuple[Example, ...] = (
    {
        "message_id": "1a628f51-bdea-4c0d-9fd9-2a24e4a19391",
        "type": "VSwitchChanged",
        "occurred_at": "2025-06-02T08:00:00Z",
        "schema_version": 1,
        "vswitch_id": "vsw-4k2m",
        "tenant_id": TENANT,
        "vpc_id": "vpc-8z1q",
        "zone_id": "edge-fra-1a",
        "cidr": "10.20.0.0/24",
        "revision": 3,
    },
    {
        "message_id": "fbf6b6aa-6652-471c-abc6-414a996ac981",
        "type": "InstanceChanged",
        "occurred_at": "2025-06-02T08:01:12.250000Z",
        "schema_version": 1,
        "instance_id": "i-0a11",
        "tenant_id": TENANT,
        "vpc_id": "vpc-8z1q",
        "vswitch_id": "vsw-4k2m",
        "private_ip": "10.20.0.11",
        "status": "Running",
        "host_id": "host-fra-31",
        "revision": 7,
        "port_name": "tap0a11",
        "mac": "fa:16:3e:0a:11:01",
    },
    {
        "message_id": "8f4b2f26-5708-41cc-a64c-0ebfd434b97d",
        "type": "EniChanged",
        "occurred_at": "2025-06-02T08:01:40Z",
        "schema_version": 1,
        "eni_id": "eni-7c33",
        "instance_id": "i-0b22",
        "tenant_id": TENANT,
        "vswitch_id": "vsw-4k2m",
        "private_ip": "10.20.0.22",
        "revision": 2,
        "port_name": "tap7c33",
        "mac": "fa:16:3e:7c:33:02",
    },
    {
        "message_id": "05b8d83d-229b-4b4d-b014-8c86b64e53c1",
        "type": "EipChanged",
        "occurred_at": "2025-06-02T08:02:05Z",
        "schema_version": 1,
        "eip_id": "eip-5d44",
        "tenant_id": TENANT,
        "ip_address": "203.0.113.25",
        "revision": 1,
    },
)

COMMANDS: tuple[Example, ...] = (
    {
        "message_id": "5a1ac115-6d46-4d0d-bb48-813a248efe0c",
        "type": "CreateHaVip",
        "occurred_at": "2025-06-02T08:10:00Z",
        "schema_version": 1,
        "command_id": "op-3f9c2a7e41d84b0c9e5a6b1d2c3e4f50",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "vswitch_id": "vsw-4k2m",
        "ip_address": "10.20.0.100",
        "name": "db-primary",
        "description": "PostgreSQL primary, kept by keepalived on i-0a11 and i-0b22",
    },
    {
        "message_id": "b3dcab03-3ed8-4cad-b8bb-6c1d355b0fb4",
        "type": "AttachHaVip",
        "occurred_at": "2025-06-02T08:11:00Z",
        "schema_version": 1,
        "command_id": "op-7a1e5c3b9d2f4e6a8b0c1d2e3f4a5b61",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "target_id": "i-0a11",
    },
    {
        "message_id": "0fb21757-6b33-4d45-a063-86baf4510c32",
        "type": "DetachHaVip",
        "occurred_at": "2025-06-09T17:30:00Z",
        "schema_version": 1,
        "command_id": "op-c4d5e6f708194a2b3c4d5e6f70819a2b",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "target_id": "eni-7c33",
    },
    {
        "message_id": "9fd65af7-bec1-4e93-b3d7-0bcde74ffcd6",
        "type": "DeleteHaVip",
        "occurred_at": "2025-06-09T17:45:00Z",
        "schema_version": 1,
        "command_id": "op-e1f2a3b4c5d64e7f8a9b0c1d2e3f4a5b",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
    },
    {
        "message_id": "c9fe6f9f-4b25-4a3e-a28a-26437b395c2b",
        "type": "AssociateEip",
        "occurred_at": "2025-06-02T08:12:00Z",
        "schema_version": 1,
        "command_id": "op-2b3c4d5e6f7a4b8c9d0e1f2a3b4c5d6e",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "eip_id": "eip-5d44",
    },
    {
        "message_id": "92f55873-8167-4dce-8bba-012c0b3bae26",
        "type": "UnassociateEip",
        "occurred_at": "2025-06-09T17:31:00Z",
        "schema_version": 1,
        "command_id": "op-9e8d7c6b5a4f4e3d2c1b0a9f8e7d6c5b",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "eip_id": "eip-5d44",
    },
)

ACCEPTED: tuple[Example, ...] = (
    {
        "message_id": "1b671497-9ac3-44e1-841c-5b0306123bcf",
        "type": "HaVipCreationAccepted",
        "occurred_at": "2025-06-02T08:10:00.184000Z",
        "schema_version": 1,
        "command_id": "op-3f9c2a7e41d84b0c9e5a6b1d2c3e4f50",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "vpc_id": "vpc-8z1q",
        "vswitch_id": "vsw-4k2m",
        "ip_address": "10.20.0.100",
        "name": "db-primary",
        "description": "PostgreSQL primary, kept by keepalived on i-0a11 and i-0b22",
    },
    {
        "message_id": "f5f5184b-8c89-4805-b320-d4e2ce08de20",
        "type": "AttachmentAccepted",
        "occurred_at": "2025-06-02T08:11:30.042000Z",
        "schema_version": 1,
        "command_id": "op-5d6e7f8a9b0c4d1e2f3a4b5c6d7e8f90",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "target_id": "eni-7c33",
        "instance_id": "i-0b22",
        "eni_id": "eni-7c33",
    },
    {
        "message_id": "50096ad9-61ef-4c27-9cde-a3b4f126fc32",
        "type": "DetachmentAccepted",
        "occurred_at": "2025-06-09T17:30:00.095000Z",
        "schema_version": 1,
        "command_id": "op-c4d5e6f708194a2b3c4d5e6f70819a2b",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "target_id": "eni-7c33",
    },
    {
        "message_id": "b5c6067c-aa50-457e-866f-3ba7ddb5dd2b",
        "type": "HaVipDeletionAccepted",
        "occurred_at": "2025-06-09T17:45:00.120000Z",
        "schema_version": 1,
        "command_id": "op-e1f2a3b4c5d64e7f8a9b0c1d2e3f4a5b",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
    },
    {
        "message_id": "45dad894-4912-4563-bcdc-519254331bbb",
        "type": "EipAssociationAccepted",
        "occurred_at": "2025-06-02T08:12:00.077000Z",
        "schema_version": 1,
        "command_id": "op-2b3c4d5e6f7a4b8c9d0e1f2a3b4c5d6e",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "eip_id": "eip-5d44",
        "eip_address": "203.0.113.25",
    },
    {
        "message_id": "664a37d0-1a13-4156-87b5-dcde10edff2b",
        "type": "EipUnassociationAccepted",
        "occurred_at": "2025-06-09T17:31:00.061000Z",
        "schema_version": 1,
        "command_id": "op-9e8d7c6b5a4f4e3d2c1b0a9f8e7d6c5b",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "eip_id": "eip-5d44",
    },
)

RESULTS: tuple[Example, ...] = (
    {
        "message_id": "b5ef080a-9c9f-4bf9-8239-98df762638b7",
        "type": "CommandSucceeded",
        "occurred_at": "2025-06-02T08:10:00.412000Z",
        "schema_version": 1,
        "command_id": "op-3f9c2a7e41d84b0c9e5a6b1d2c3e4f50",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "command_type": "CreateHaVip",
        "stage": "mapping",
    },
    {
        "message_id": "8a42568d-9edc-43a3-b042-8764db530ac7",
        "type": "CommandRejected",
        "occurred_at": "2025-06-02T08:11:00.156000Z",
        "schema_version": 1,
        "command_id": "op-7a1e5c3b9d2f4e6a8b0c1d2e3f4a5b61",
        "tenant_id": TENANT,
        "havip_id": HAVIP,
        "command_type": "AttachHaVip",
        "stage": "quota",
        "code": "IncorrectInstanceStatus",
        "reason": "instance i-0a11 is Starting; it must be Running or Stopped",
    },
)

VRRP: tuple[Example, ...] = (
    {
        "message_id": "659ed00e-90fe-4761-b23b-451aca950379",
        "type": "VrrpReported",
        "occurred_at": "2025-06-02T08:13:04.731000Z",
        "schema_version": 1,
        "havip_id": HAVIP,
        "tenant_id": TENANT,
        "instance_id": "i-0a11",
        "state": "MASTER",
        "priority": 150,
        "seq": 1748851984702114,
        "reported_at": "2025-06-02T08:13:04.702114Z",
        "received_at": "2025-06-02T08:13:04.731000Z",
        "lease_seconds": 15.0,
        "source": "agent",
    },
    {
        "message_id": "5d0c6a4e-93a7-4b8e-9b41-0c7d2f1e6a55",
        "type": "ObservedClaimsRenewed",
        "occurred_at": "2025-06-02T08:13:09.800000Z",
        "schema_version": 1,
        "observer_id": "host-fra-31",
        "lease_seconds": 15.0,
        "claims": [
            {
                "havip_id": HAVIP,
                "tenant_id": TENANT,
                "instance_id": "i-0a11",
                "priority": 150,
                "seq": 1748851989800112,
                "seen_at": "2025-06-02T08:13:09.412034Z",
            }
        ],
    },
)

MAPPINGS: tuple[Example, ...] = (
    {
        "message_id": "7502b216-c88b-4925-8033-4caaebf15c44",
        "type": "HaVipMappingChanged",
        "occurred_at": "2025-06-02T08:13:04.768000Z",
        "schema_version": 1,
        "havip_id": HAVIP,
        "tenant_id": TENANT,
        "vpc_id": "vpc-8z1q",
        "vswitch_id": "vsw-4k2m",
        "ip_address": "10.20.0.100",
        "eips": [{"eip_id": "eip-5d44", "ip_address": "203.0.113.25"}],
        "status": "InUse",
        "owner": {"instance_id": "i-0a11", "eni_id": None, "private_ip": "10.20.0.11", "host_id": "host-fra-31"},
        "attachments": [
            {"target_id": "i-0a11", "instance_id": "i-0a11", "eni_id": None},
            {"target_id": "eni-7c33", "instance_id": "i-0b22", "eni_id": "eni-7c33"},
        ],
        "version": 6,
        "report_received_at": "2025-06-02T08:13:04.741000Z",
    },
)

DEAD_LETTERS: tuple[Example, ...] = (
    {
        "message_id": "78c996e0-fbde-40de-b0e4-d53a7d39b511",
        "type": "DeadLettered",
        "occurred_at": "2025-06-02T08:20:41.503000Z",
        "schema_version": 1,
        "source_topic": "vrrp.events",
        "partition": 4,
        "offset": 18231,
        "consumer": "mapping",
        "code": "MalformedMessage",
        "reason": "value: a record must carry message_id, occurred_at, schema_version",
        "original_key_b64": "aGF2aXAtMGExYjJjM2Q=",
        "original_value_b64": (
            "eyJ0eXBlIjogIlZycnBSZXBvcnRlZCIsICJoYXZpcF9pZCI6ICJoYXZpcC0wYTFiMmMzZCIsICJzdGF0ZSI6ICJtYXN0ZXIifQ=="
        ),
        "original_value_text": '{"type": "VrrpReported", "havip_id": "havip-0a1b2c3d", "state": "master"}',
    },
)

# By topic name, in the order of the topic's message types.
BY_TOPIC: dict[str, tuple[Example, ...]] = {
    "havip.commands": COMMANDS,
    "havip.commands.accepted": ACCEPTED,
    "havip.command-results": RESULTS,
    "vrrp.events": VRRP,
    "ens.inventory": INVENTORY,
    "havip.mappings": MAPPINGS,
    "havip.dead-letters": DEAD_LETTERS,
}
