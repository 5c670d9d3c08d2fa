"""Django's PostgreSQL backend, whose connection pool checks every idle connection at the first dead one.

When the database drops one pooled connection (a restart, a failover, `pg_terminate_backend`), it
has usually dropped them all. Django's pool check (CONN_HEALTH_CHECKS) tries the idle connections
one by one and psycopg_pool waits a growing delay after each dead one (1 s, 2 s, 4 s…), so a pool
grown by a burst of requests timed requests out (503) for many seconds after an outage. Checking all
the idle connections at the first dead one makes the next try get a live connection.
"""

from collections.abc import Callable
from typing import Any

from django.db.backends.postgresql import base
from psycopg_pool import ConnectionPool


class DatabaseWrapper(base.DatabaseWrapper):
    # Django's own, which its type stubs leave out.
    _connection_pools: dict[str, ConnectionPool]
    _configure_connection: Callable[[Any], None]

    @property
    def pool(self) -> ConnectionPool | None:
        options = self.settings_dict["OPTIONS"].get("pool")
        if options and self.alias not in self._connection_pools:
            connect_kwargs = {**self.get_connection_params(), "autocommit": True}  # as Django's own
            pool = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,
                check=self._check_connection,
                **(options if isinstance(options, dict) else {}),
            )
            self._connection_pools.setdefault(self.alias, pool)
        return super().pool

    def _check_connection(self, conn: Any) -> None:
        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            pool = self._connection_pools.get(self.alias)
            if pool is not None:
                pool.check()  # every idle connection now, rather than one per growing delay
            raise
