"""Footage: decode, detect, track, tracklets, people (see DESIGN.md)."""
