"""What every HTTP surface shares: the error shape and its handler, strict serializers, the router,
and the tenant-scoped viewset base."""
