"""Repositories written once in the SQL both backends speak (``?`` placeholders, RETURNING,
ON CONFLICT); a backend supplies transactions, migrations and its change notifier."""
