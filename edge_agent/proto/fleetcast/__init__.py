"""Generated code for protos/fleetcast/v1/*.proto (committed; `make protos` rewrites it)."""
