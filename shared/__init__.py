"""The contract package: event models, money, the envelope, topic names, and the worker runtime."""
