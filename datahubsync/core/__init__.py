"""Shared mechanics that know nothing about any one feature."""
