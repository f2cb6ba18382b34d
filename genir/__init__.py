"""genir: mental image retrieval with generative visual feedback, as gRPC services."""

__version__ = "0.1.0"
