"""Rendering of explanations: terminal tables, JSON files and heatmap overlays."""
