"""Shared fixtures live in conftest_worker so the client package tests can use them too."""

from conftest_worker import Worker, client, worker  # noqa: F401
