"""The HTTP side of the core: JSON API (problem+json errors, API keys with roles) and the phone answer page."""

from alerting.api.app import create_app

__all__ = ["create_app"]
