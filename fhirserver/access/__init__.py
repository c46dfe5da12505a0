"""Access control: who is calling (authenticate.py) and what they may see and do (policy.py)."""
