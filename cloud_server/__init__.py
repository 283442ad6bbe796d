"""Cloud server: serves bundle tails over the Open Inference Protocol (KServe v2 / Triton gRPC)."""
