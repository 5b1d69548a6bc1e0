"""Tests of the host side that need real engines (the environment bundle)."""
