"""Predictors of architecture metrics from encodings (numpy only: they run on devices too)."""
