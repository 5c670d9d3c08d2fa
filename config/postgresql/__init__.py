"""Django's PostgreSQL backend, with a connection pool that finds all its dead connections at once."""
