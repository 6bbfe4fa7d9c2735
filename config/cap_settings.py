"""CAP 1.2 settings (JIAOYING_CAP_*): who the exports say they are from, and how imported messages map.

A group of config.settings.Settings like the providers' groups; config.wiring hands it to the core.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from alerting.cap.export import CapIdentity
from alerting.cap.mapping import CapMapping


class CapSettings(BaseModel):
    # the exports' <sender>: CAP forbids spaces, commas, < and &
    cap_sender: str = Field(default="jiaoying", pattern=r"^[^\s,<&]{1,200}$")
    cap_sender_name: str = Field(default="叫应 jiaoying", min_length=1, max_length=100)
    # the county's 14-character GB/T 35965.1 issuing unit code (区划 6 + 机构 3 + 内部 3 + 扩展 2): set, exported
    # identifiers take the profile's form ZZZZZZDDDUUUXX_YYYYMMDDhhmmss_N; unset, <sender>.alert.<id>
    cap_issuer_code: str | None = Field(default=None, pattern=r"^[0-9A-Za-z]{14}$")
    # severity → level, level parameter names, geocode names, event → hazard aliases (alerting.cap.mapping);
    # e.g. JIAOYING_CAP_MAPPING='{"severity_levels": {"Extreme": "red", "Severe": "red", "Moderate": "orange"}}'
    cap_mapping: CapMapping = Field(default_factory=CapMapping)

    def cap_identity(self) -> CapIdentity:
        return CapIdentity(self.cap_sender, self.cap_sender_name, self.cap_issuer_code)
