"""The JSON API under /api/v1 and the provider webhooks: one router module per resource."""
