"""The SQL of the bridge: one module per table or concern."""
