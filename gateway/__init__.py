"""The sandbox's only door out: the per-run model gateway (token, budget, metering) and its upstreams."""
