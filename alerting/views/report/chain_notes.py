"""What an auditor reads beside "intact" or "broken": which rows are keyed, and the latest checkpoint outside the
database the chain was held to, or that there is none (then an earlier copy put back whole would not show)."""

from __future__ import annotations

from alerting.audit.chain import Verification
from alerting.model.clock import local_text


def chain_notes(v: Verification) -> str:
    notes = []
    if v.unkeyed:
        notes.append(f"第 1–{v.unkeyed} 条为启用审计密钥前写入（仅 SHA-256，未加密钥）")
    if v.checkpoint is not None:
        notes.append(f"最新库外检查点：第 {v.checkpoint.seq} 条，{local_text(v.checkpoint.at)}（北京时间）")
    elif v.checkpoints_configured:
        notes.append("尚未写入库外检查点")
    else:
        notes.append("未配置库外检查点（JIAOYING_AUDIT_CHECKPOINTS），整体回滚到旧副本无法发现")
    return "；".join(notes)
