"""Console pages: the administrator's account list and actions, and anyone's own password change.

Every change goes through AccountService, which writes the audit event in the same transaction.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import Response

from alerting.model.access import AccountRole
from alerting.model.actor import Actor
from alerting.people.accounts import AccountError
from alerting.views.accounts import account_history, account_rows, townships
from alerting.web.api.auth import CoreDep
from alerting.web.console.account_form import NewAccount, check_new_account, password_error, service_error
from alerting.web.console.web import (
    PREFIX,
    SESSION_COOKIE,
    Acting,
    Administering,
    PageError,
    Seeing,
    Viewer,
    redirect,
    render,
)

log = structlog.get_logger()

router = APIRouter(include_in_schema=False)

HOME = PREFIX + "/accounts"
EVENT_LABEL = {
    "account.created": "创建账号",
    "account.signed_in": "登录",
    "account.signed_out": "退出登录",
    "account.sign_in_failed": "登录失败",
    "account.password_set": "设置密码",
    "account.password_change_refused": "改密码时当前密码错误",
    "account.disabled": "停用",
    "account.enabled": "启用",
}
Username = Annotated[str, Path(max_length=64)]
Text = Annotated[str, Form(max_length=200)]


def _admin(who: Viewer) -> Viewer:
    if not who.principal.is_admin:
        raise PageError(403, "只有管理员可以管理账号。")
    return who


def _username(who: Viewer) -> str:
    return Actor.parse(who.principal.actor).username or who.principal.actor


async def _list_page(
    request: Request, core: CoreDep, who: Viewer, form: NewAccount | None = None, status: int = 200
) -> Response:
    rows = await account_rows(core.db)
    return render(
        request,
        who,
        "accounts",
        status=status,
        accounts=rows,
        townships=await townships(core.db),
        form=form or NewAccount(role=AccountRole.DUTY.value),
        now=core.clock.now(),
        roles=list(AccountRole),
    )


@router.get(HOME)
async def accounts_page(request: Request, core: CoreDep, who: Seeing) -> Response:
    return await _list_page(request, core, _admin(who))


@router.post(HOME)
async def add_account(
    request: Request,
    core: CoreDep,
    who: Administering,
    username: Annotated[str, Form(max_length=64)] = "",
    display_name: Text = "",
    role: Annotated[str, Form(max_length=16)] = "",
    unit_code: Annotated[str, Form(max_length=20)] = "",
    password: Text = "",
) -> Response:
    taken = {a.username for a in await account_rows(core.db)}
    codes = {t.code for t in await townships(core.db)}
    form = check_new_account(
        username=username,
        display_name=display_name,
        role=role,
        unit_code=unit_code,
        password=password,
        taken=taken,
        township_codes=codes,
    )
    if form.valid:
        try:
            await core.accounts.create(
                form.username,
                password,
                role=AccountRole(form.role),
                display_name=form.display_name,
                unit_code=form.unit_code or None,
                actor=who.principal.actor,
            )
        except AccountError as exc:
            name, message = service_error(exc)
            form.errors[name] = message
    if not form.valid:
        return await _list_page(request, core, who, form, status=400)
    log.info("console.account_added", username=form.username, by=who.principal.actor)
    return redirect(f"{HOME}/{form.username}", f"已添加账号 {form.username}，请把初始密码当面或电话告知本人。")


async def _detail_page(
    request: Request, core: CoreDep, who: Viewer, username: str, error: str | None = None, status: int = 200
) -> Response:
    found = await account_rows(core.db, username)
    if not found:
        raise PageError(404, f"没有账号 {username}。")
    return render(
        request,
        who,
        "account",
        status=status,
        account=found[0],
        history=await account_history(core.db, username),
        now=core.clock.now(),
        error=error,
        myself=_username(who) == username,
        EVENT_LABEL=EVENT_LABEL,
    )


@router.get(HOME + "/{username}")
async def account_page(request: Request, core: CoreDep, who: Seeing, username: Username) -> Response:
    return await _detail_page(request, core, _admin(who), username)


@router.post(HOME + "/{username}/password")
async def reset_password(
    request: Request, core: CoreDep, who: Administering, username: Username, password: Text = ""
) -> Response:
    if (problem := password_error(password)) is not None:
        return await _detail_page(request, core, who, username, error=problem, status=400)
    try:
        await core.accounts.set_password(username, password, actor=who.principal.actor)
    except AccountError as exc:
        raise PageError(404, str(exc)) from exc
    return redirect(f"{HOME}/{username}", f"已重置 {username} 的密码；其所有已登录的会话已退出。")


async def _set_active(request: Request, core: CoreDep, who: Viewer, username: str, active: bool) -> Response:
    if not active and _username(who) == username:
        return await _detail_page(request, core, who, username, error="不能停用自己正在使用的账号。", status=400)
    try:
        await core.accounts.set_active(username, active, actor=who.principal.actor)
    except AccountError as exc:
        raise PageError(404, str(exc)) from exc
    said = "已启用" if active else "已停用（其会话已立即失效）"
    return redirect(f"{HOME}/{username}", f"账号 {username} {said}。")


@router.post(HOME + "/{username}/disable")
async def disable_account(request: Request, core: CoreDep, who: Administering, username: Username) -> Response:
    return await _set_active(request, core, who, username, False)


@router.post(HOME + "/{username}/enable")
async def enable_account(request: Request, core: CoreDep, who: Administering, username: Username) -> Response:
    return await _set_active(request, core, who, username, True)


def _password_form(request: Request, who: Viewer, errors: dict[str, str], status: int = 200) -> Response:
    return render(request, who, "account_password", status=status, errors=errors)


@router.get(PREFIX + "/password")
async def own_password_page(request: Request, who: Seeing) -> Response:
    return _password_form(request, who, {})


@router.post(PREFIX + "/password")
async def change_own_password(
    request: Request,
    core: CoreDep,
    who: Acting,
    current: Text = "",
    new: Text = "",
    again: Text = "",
) -> Response:
    errors: dict[str, Any] = {}
    if not current:
        errors["current"] = "请输入当前密码"
    if (problem := password_error(new)) is not None:
        errors["new"] = problem
    elif new != again:
        errors["again"] = "两次输入的新密码不一致"
    elif new == current:
        errors["new"] = "新密码不能与当前密码相同"
    if not errors:
        try:
            await core.accounts.change_own_password(_username(who), current, new)
        except AccountError as exc:
            name, _ = service_error(exc)
            errors["current" if name == "current" else "new"] = (
                "当前密码不对" if name == "current" else "新密码不符合要求"
            )
    if errors:
        return _password_form(request, who, errors, status=400)
    response = redirect(PREFIX + "/sign-in", "密码已修改，请用新密码重新登录。")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
