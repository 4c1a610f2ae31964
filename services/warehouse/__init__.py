"""The warehouse service; its SPEC is what the platform app runs."""

from services.warehouse.app import SPEC

__all__ = ["SPEC"]
