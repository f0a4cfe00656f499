"""Answers "who receives traffic for this address?" from memory."""
