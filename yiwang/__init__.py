"""yiwang: profiles, tags, recommendations and proactive alerts for a one-network government-services portal."""

__version__ = "0.1.0"
