"""audit: the dual-check inventory log."""
