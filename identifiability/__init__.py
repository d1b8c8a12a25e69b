"""Identifiability metrics and the theory's assumptions as executable checks."""
