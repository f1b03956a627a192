"""The cloud fleet service: gRPC ingest of agents' outboxes, fleet state, package delivery, admin API."""
