"""The ``serve`` application: mounts the routes each feature package exports."""
