"""Persistence: PostgreSQL (migrations, pool, one module per table family)
and Redis (keys, sessions, quotes, orders)."""
