"""E-invoicing through Billit over Peppol (the worker comes later; see docs/billit-simulator.md)."""
