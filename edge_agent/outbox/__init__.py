"""The agent's durable outbox (SQLite WAL) and the choice of samples worth uploading."""
