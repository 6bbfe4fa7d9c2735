"""The account forms' checks, in words an administrator acts on; each error is keyed by the field it belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerting.model.access import ACCOUNT_ROLE_LABEL, AccountRole
from alerting.model.plain_text import bad_character
from alerting.people.accounts import MIN_PASSWORD, USERNAME, AccountError

MAX_NAME = 100

# AccountService names the field first ("unit: ..."); this maps it to the form's input
_SERVICE_FIELD = {"username": "username", "password": "password", "unit": "unit_code", "current": "current"}


@dataclass
class NewAccount:
    username: str = ""
    display_name: str = ""
    role: str = ""
    unit_code: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.errors


def password_error(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"密码至少 {MIN_PASSWORD} 个字符，现在是 {len(password)} 个"
    if len(password) > 200:
        return "密码最多 200 个字符"
    return None


def check_new_account(
    *,
    username: str,
    display_name: str,
    role: str,
    unit_code: str,
    password: str,
    taken: set[str],
    township_codes: set[str],
) -> NewAccount:
    f = NewAccount(username.strip(), display_name.strip(), role.strip(), unit_code.strip())
    if not USERNAME.match(f.username):
        f.errors["username"] = "用户名为 2 到 64 个英文字母、数字或 . _ -"
    elif f.username in taken:
        f.errors["username"] = f"用户名 {f.username} 已被使用"
    if len(f.display_name) > MAX_NAME:
        f.errors["display_name"] = f"姓名最多 {MAX_NAME} 个字"
    elif (bad := bad_character(f.display_name, multiline=False)) is not None:
        f.errors["display_name"] = f"姓名不能含有控制字符（第 {bad.position} 个字符是 {bad.code}）"
    if f.role not in AccountRole.__members__.values():
        f.errors["role"] = "请选择角色：" + "、".join(ACCOUNT_ROLE_LABEL.values())
    elif f.role == AccountRole.TOWNSHIP and not f.unit_code:
        f.errors["unit_code"] = "乡镇值班员必须选择所属乡镇（街道）"
    elif f.role == AccountRole.TOWNSHIP and f.unit_code not in township_codes:
        f.errors["unit_code"] = f"没有编码为 {f.unit_code} 的乡镇（街道）"
    elif f.role != AccountRole.TOWNSHIP:
        f.unit_code = ""  # only a township officer is bound to a unit; a left-over choice is ignored
    if (problem := password_error(password)) is not None:
        f.errors["password"] = problem
    return f


def service_error(exc: AccountError) -> tuple[str, str]:
    """(form field, message) for an error the service found after the form's own checks passed (a race)."""
    name, _, message = str(exc).partition(":")
    return _SERVICE_FIELD.get(name.strip(), "username"), message.strip() or str(exc)
