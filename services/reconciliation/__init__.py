"""Reconciliation: bank transfers and merchant-reported payments allocated to invoices.

So far only the pure rules (``domain.py``, ``matching.py``); the worker wiring follows the
runtime's timer work."""
