"""A refused CAP message says which element is wrong and why, in words a duty officer can act on."""

from __future__ import annotations


class CapRefused(ValueError):
    """The message is not taken. `element` is its path inside the message, e.g. `info[0]/area[1]/polygon[0]`
    ("" for the document as a whole); `status` is what an HTTP caller is answered with."""

    def __init__(self, element: str, message: str, *, status: int = 422, slug: str = "cap-refused") -> None:
        super().__init__(f"{element}: {message}" if element else message)
        self.element, self.message, self.status, self.slug = element, message, status, slug
