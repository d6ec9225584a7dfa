"""Tests of pinqi.cli."""
