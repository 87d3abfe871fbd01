"""Training tricks: a pure core plus a small hook class each (see base.py for the loop)."""
