"""Tests of pinqi.baselines."""
