"""Intake consumes no events yet: it is the origin of client facts, not a listener."""

from twoline_shared.inbox import ConsumerBinding

BINDINGS: list[ConsumerBinding] = []
