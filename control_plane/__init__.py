"""Fleetcast control plane: compiler, catalog, rollouts, monitoring."""

from edge_agent import __version__

__all__ = ["__version__"]
