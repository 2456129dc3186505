"""Errors of model artifacts on disk (no torch here: callers that only report them need not load a runtime)."""
from __future__ import annotations


class ArtifactError(Exception):
    """A model artifact on disk is missing, malformed or inconsistent. Raised at startup, not per request."""
