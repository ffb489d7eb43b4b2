"""Renderers, one per command family: result objects in, rich output out. Nothing here decides anything."""
