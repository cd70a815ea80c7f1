"""The gRPC server: the one place grpc meets the broker."""
