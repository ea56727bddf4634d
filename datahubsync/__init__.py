"""datahubsync: keeps a small fleet of Linux servers fed with data."""

__version__ = "0.1.0"
