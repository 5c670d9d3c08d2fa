"""Executing runs: dispatch and the reaper, the Celery task, the executor and what it needs."""
