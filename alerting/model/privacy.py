"""Masking of personal data for logs and shared reports."""

from __future__ import annotations


def mask_phone(phone: str | None) -> str:
    """+8613912345678 -> +86139****5678: enough to tell numbers apart, not enough to dial."""
    if not phone:
        return ""
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:-8] + "****" + phone[-4:]
