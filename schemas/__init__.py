"""The contracts of the HAVIP control plane: messages, topics, errors, migrations."""
