"""The agent's link to the cloud: drains the outbox over gRPC (mTLS) and exchanges heartbeats."""
