"""cryptolens-bridge: Stripe and CRM webhooks to Cryptolens license effects, exactly once."""

__version__ = "0.1.0"
