"""Tests of pinqi.common."""
