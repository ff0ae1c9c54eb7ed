"""Errors a user can act on: each says which file and what is wrong in one line."""

from __future__ import annotations


class SourceError(ValueError):
    """Bad input to a data source (missing imagery, labels off the image grid, OSM outside the image...)."""


class TaxonomyError(SourceError):
    """A taxonomy YAML that cannot be used; the message names the file and line."""
