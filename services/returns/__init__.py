"""The returns service; its SPEC is what the platform app runs."""

from services.returns.app import SPEC

__all__ = ["SPEC"]
