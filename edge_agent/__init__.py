"""Fleetcast edge agent: the on-device runtime and the agent daemon around it."""

__version__ = "0.1.0"
