"""Stores: one interface (``base.Store``), three backends (memory, SQLite, PostgreSQL)."""
