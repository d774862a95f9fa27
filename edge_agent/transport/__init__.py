"""Transports between the agent and the control plane (see base.Transport)."""
