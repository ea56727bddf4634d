"""Datasets: hub-side packaging and client-side sync."""
