"""The audit service; its SPEC is what the platform app runs."""

from services.audit.app import SPEC

__all__ = ["SPEC"]
