"""Tests of pinqi.w2q."""
