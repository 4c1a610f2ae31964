"""The refunds service; its SPEC is what the platform app runs."""

from services.refunds.app import SPEC

__all__ = ["SPEC"]
