"""Generated gRPC stubs live beside the .proto files (run `make protos`)."""
