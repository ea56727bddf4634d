"""Logs: ship IPs found in hourly sinkhole logs (client) and receive them (``serve``)."""
