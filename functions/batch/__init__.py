"""Batch scoring: `fleetcast batch score` over CSV, Parquet and npz, locally or on Dask."""
