"""Masking of personal data for logs and shared reports, and who may read a phone number whole."""

from __future__ import annotations

from alerting.model.access import AccountRole, Principal


def mask_phone(phone: str | None) -> str:
    """+8613912345678 -> +86139****5678: enough to tell numbers apart, not enough to dial."""
    if not phone:
        return ""
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:-8] + "****" + phone[-4:]


def sees_whole_numbers(who: Principal) -> bool:
    """Whoever may act on an alert (duty, township inside its own subtree, admin) reads numbers whole, to call
    them; an auditor reads them masked."""
    return who.role is not AccountRole.AUDITOR


def number_to_dial(who: Principal, phone: str | None) -> str | None:
    """The whole number for someone who may call it, else None (they read the masked one)."""
    return phone if phone and sees_whole_numbers(who) else None
