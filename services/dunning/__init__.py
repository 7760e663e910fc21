"""Dunning: notices to late payers, pauses, hand-over to collection (domain only so far)."""
