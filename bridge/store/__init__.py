"""The only place with SQL: one module owns each table."""
