"""Tests of the Django integration, with a Django app of their own (its models)."""
