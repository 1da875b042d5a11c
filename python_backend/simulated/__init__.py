"""A SIMULATED engine: B200 token rates from published figures, no model compute (see profile.py)."""
