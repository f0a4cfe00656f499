"""Writes the JSON Schema of each topic beside this file (`jsonschema/<topic>.json`).

A test keeps the files in sync with the models; regenerate with
`python -m schemas.export` after changing a message.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.topics import ALL, Topic

SCHEMA_DIR = Path(__file__).parent / "jsonschema"


def render(topic: Topic) -> str:
    schema = topic.adapter.json_schema()
    schema["title"] = topic.name
    schema["description"] = f"key: {topic.key}; {topic.doc}" + ("; compacted" if topic.compacted else "")
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for topic in ALL:
        (SCHEMA_DIR / f"{topic.name}.json").write_text(render(topic))


if __name__ == "__main__":
    main()
