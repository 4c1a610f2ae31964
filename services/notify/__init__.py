"""The notify service; its SPEC is what the platform app runs."""

from services.notify.app import SPEC

__all__ = ["SPEC"]
