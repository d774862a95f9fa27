"""Fleetcast control plane: compiler, catalog, rollouts, monitoring."""

__version__ = "0.1.0"
