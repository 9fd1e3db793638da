"""profilestore: a first-party consent ledger and purpose-bound profile store."""

__version__ = "0.1.0"
