"""Manifests: read (YAML/JSON, defensively), JSON Schema, semantic checks, frozen dataclasses (types), validate."""
