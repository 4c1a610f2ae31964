"""The five returnflow services. None imports another; they share only contracts/ and returnflow/."""

SERVICE_MODULES = {
    "returns": "services.returns.app",
    "warehouse": "services.warehouse.app",
    "refunds": "services.refunds.app",
    "audit": "services.audit.app",
    "notify": "services.notify.app",
}
