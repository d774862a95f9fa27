"""Monitoring adapters over the pure core: SHAP explanations, OpenLineage export, Prometheus."""
