"""Developer tools: in a checkout, never in the wheel or the image."""
