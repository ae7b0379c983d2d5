"""All SQL of the bridge, one module per table or question it answers."""
