"""A stand-in for the Cryptolens Web API 3, for staging, demos and tests (docs/sandbox.md)."""
