"""What the Strimzi and CloudNativePG operators require of the objects we give them.

Written by hand from their API references (Strimzi kafka.strimzi.io/v1, CloudNativePG
postgresql.cnpg.io/v1), covering the fields these manifests use: required fields, enums and
bounds, and no unknown field where a typo would be dropped silently by the API server's pruning.
Not the operators' full CRDs: a cluster's `kubectl apply --dry-run=server` is the last word.
"""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_QUANTITY = {"type": ["string", "integer"], "pattern": r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti)?$"}
_RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "propertyNames": {"enum": ["cpu", "memory"]}, "additionalProperties": _QUANTITY},
        "limits": {"type": "object", "propertyNames": {"enum": ["cpu", "memory"]}, "additionalProperties": _QUANTITY},
    },
}


def _closed(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """An object with these fields only: a typo is an error, not a field the API server drops."""
    return {"type": "object", "required": list(required), "additionalProperties": False, "properties": properties}


def _object(spec: dict[str, Any], *, cluster_label: bool = False) -> Any:
    metadata: dict[str, Any] = {"type": "object", "required": ["name"], "properties": {"name": _NAME}}
    if cluster_label:
        metadata["required"].append("labels")
        metadata["properties"]["labels"] = {"type": "object", "required": ["strimzi.io/cluster"]}
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": metadata, "spec": spec},
    }


_STORAGE = {
    "type": "object",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["ephemeral", "persistent-claim", "jbod"]},
        "size": _QUANTITY,
        "class": {"type": "string"},
        "deleteClaim": {"type": "boolean"},
        "volumes": {"type": "array"},
    },
    "if": {"properties": {"type": {"const": "persistent-claim"}}},
    "then": {"required": ["size"]},
}

_LISTENER = {
    "type": "object",
    "required": ["name", "port", "type", "tls"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]{1,11}$"},
        "port": {"type": "integer", "minimum": 9092},
        "type": {"enum": ["internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"]},
        "tls": {"type": "boolean"},
        "authentication": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["tls", "scram-sha-512", "oauth", "custom"]}},
        },
        "configuration": {"type": "object"},
        "networkPolicyPeers": {"type": "array"},
    },
}

_ACL = {
    "type": "object",
    "required": ["resource", "operations"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["allow", "deny"]},
        "host": {"type": "string"},
        "resource": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                "name": {"type": "string", "minLength": 1},
                "patternType": {"enum": ["literal", "prefix"]},
            },
        },
        "operations": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {
                "enum": [
                    "Read",
                    "Write",
                    "Create",
                    "Delete",
                    "Alter",
                    "Describe",
                    "ClusterAction",
                    "AlterConfigs",
                    "DescribeConfigs",
                    "IdempotentWrite",
                    "All",
                ]
            },
        },
    },
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("kafka.strimzi.io/v1", "Kafka"): _object(
        {
            "type": "object",
            "required": ["kafka"],
            "properties": {
                "kafka": _closed(
                    {
                        "version": {"type": "string"},
                        "metadataVersion": {"type": "string"},
                        "listeners": {"type": "array", "minItems": 1, "items": _LISTENER},
                        "authorization": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"enum": ["simple", "keycloak", "opa", "custom"]}},
                        },
                        "config": {"type": "object"},
                        "resources": _RESOURCES,
                        "rack": {"type": "object"},
                        "template": {"type": "object"},
                    },
                    "listeners",
                ),
                # KRaft with node pools (the only mode of the v1 API): no ZooKeeper section.
                "zookeeper": False,
                "entityOperator": {
                    "type": "object",
                    "required": ["topicOperator", "userOperator"],
                    "properties": {"topicOperator": {"type": "object"}, "userOperator": {"type": "object"}},
                },
            },
        },
    ),
    ("kafka.strimzi.io/v1", "KafkaNodePool"): _object(
        _closed(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "roles": {"type": "array", "minItems": 1, "items": {"enum": ["controller", "broker"]}},
                "storage": _STORAGE,
                "resources": _RESOURCES,
                "jvmOptions": {"type": "object"},
                "template": {"type": "object"},
            },
            "replicas",
            "roles",
            "storage",
        ),
        cluster_label=True,
    ),
    ("kafka.strimzi.io/v1", "KafkaTopic"): _object(
        _closed(
            {
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {"type": "object", "additionalProperties": {"type": ["string", "integer", "boolean"]}},
            },
            "partitions",
            "replicas",
        ),
        cluster_label=True,
    ),
    ("kafka.strimzi.io/v1", "KafkaUser"): _object(
        _closed(
            {
                "authentication": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}},
                },
                "authorization": _closed(
                    {"type": {"const": "simple"}, "acls": {"type": "array", "items": _ACL}}, "type", "acls"
                ),
                "quotas": {"type": "object"},
                "template": {"type": "object"},
            },
            "authentication",
            "authorization",
        ),
        cluster_label=True,
    ),
    ("postgresql.cnpg.io/v1", "Cluster"): _object(
        _closed(
            {
                "instances": {"type": "integer", "minimum": 1},
                "imageName": {"type": "string", "pattern": r"^[^:@]+(:[^:@/]+|@sha256:[0-9a-f]{64})$"},
                "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
                "bootstrap": {
                    "type": "object",
                    "properties": {
                        "initdb": {
                            "type": "object",
                            "required": ["database", "owner"],
                            "properties": {"database": {"type": "string"}, "owner": {"type": "string"}},
                        }
                    },
                },
                "postgresql": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
                        "synchronous": _closed(
                            {
                                "method": {"enum": ["any", "first"]},
                                "number": {"type": "integer", "minimum": 1},
                                "dataDurability": {"enum": ["required", "preferred"]},
                            },
                            "method",
                            "number",
                        ),
                    },
                },
                "storage": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {"size": _QUANTITY, "storageClass": {"type": "string"}},
                },
                "resources": _RESOURCES,
                "monitoring": {"type": "object"},
                "affinity": {"type": "object"},
                "backup": {"type": "object"},
            },
            "instances",
            "storage",
        )
    ),
}
