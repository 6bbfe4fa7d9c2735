// The live board: a snapshot arrives over server-sent events whenever a number changes, and is put in
// place here. The page is complete without this file (and then refreshes itself every 30 s).
"use strict";
(() => {
  const root = document.querySelector("[data-board]");
  if (!root || !window.EventSource) return;
  const live = document.getElementById("live");
  const stale = document.getElementById("stale");
  const FIELDS = ["planned", "sent", "delivered", "answered", "escalated", "silent"];
  // the server's clock, not the browser's, says how long ago something happened
  let skew = Date.parse(root.dataset.now) - Date.now();

  const since = (iso) => {
    const s = Math.max(0, Math.floor((Date.now() + skew - Date.parse(iso)) / 1000));
    if (s < 60) return `${s}秒`;
    if (s < 3600) return `${Math.floor(s / 60)}分${s % 60}秒`;
    if (s < 86400) return `${Math.floor(s / 3600)}小时${Math.floor((s % 3600) / 60)}分`;
    return `${Math.floor(s / 86400)}天${Math.floor((s % 86400) / 3600)}小时`;
  };
  const tick = () => {
    for (const el of document.querySelectorAll("[data-since]")) el.textContent = since(el.dataset.since);
  };
  setInterval(tick, 1000);

  const cell = (key) => root.querySelector(`[data-k="${CSS.escape(key)}"]`);
  const put = (key, value) => {
    const el = cell(key);
    if (!el || el.textContent === String(value)) return;
    el.textContent = String(value);
    el.classList.remove("changed");
    void el.offsetWidth; // restart the highlight
    el.classList.add("changed");
  };
  const pct = (n, of) => (of ? Math.round((100 * n) / of) : 0);
  const bar = (key, p) => {
    const el = root.querySelector(`[data-bar="${CSS.escape(key)}"]`);
    if (!el) return;
    const silent = pct(p.silent, p.planned);
    const up = Math.min(silent, pct(p.escalated_open, p.planned));
    el.querySelector(".answered").style.width = `${pct(p.answered, p.planned)}%`;
    el.querySelector(".escalated").style.width = `${up}%`;
    el.querySelector(".silent").style.width = `${silent - up}%`;
    el.title = `已应答 ${p.answered} / 应叫应 ${p.planned}`;
  };
  // Something the page cannot patch (a new alert, one ended, a new name on a list). A reload would throw
  // away a reason being typed, and during a county-wide alert names change every second: so reload at most
  // every RELOAD_MS, only for a change of alerts, and otherwise offer the reload in a banner.
  const RELOAD_MS = 15000;
  let reloadAt = 0;
  const outdated = (alertsChanged) => {
    const typing = [...root.querySelectorAll("input, select, textarea")].some(
      (el) => el.type !== "hidden" && el.value && el.defaultValue !== el.value,
    );
    stale.hidden = false;
    if (!alertsChanged || typing || document.querySelector("details[open]") || reloadAt) return;
    const loadedAt = Number(sessionStorage.getItem("board-loaded") || 0);
    reloadAt = Math.max(Date.now(), loadedAt + RELOAD_MS);
    setTimeout(() => window.location.reload(), reloadAt - Date.now());
  };
  sessionStorage.setItem("board-loaded", String(Date.now()));

  const apply = (board) => {
    skew = Date.parse(board.generated_at) - Date.now();
    const shown = [...root.querySelectorAll("[data-alert]")].map((el) => el.dataset.alert).join(",");
    if (shown !== board.alerts.map((a) => String(a.id)).join(",")) return outdated(true);
    let patchable = true;
    for (const a of board.alerts) {
      for (const f of FIELDS) put(`${a.id}.total.${f}`, a.totals[f]);
      put(`${a.id}.total.pct`, pct(a.totals.answered, a.totals.planned));
      bar(`${a.id}.total`, a.totals);
      for (const t of a.townships) {
        const key = `${a.id}.${t.code || "county"}`;
        if (!root.querySelector(`[data-row="${CSS.escape(key)}"]`)) return outdated(true); // a new township
        for (const f of FIELDS) put(`${key}.${f}`, t[f]);
        bar(key, t);
      }
      put(`${a.id}.silent_total`, a.silent_total);
      const list = root.querySelector(`[data-silent-of="${a.id}"]`);
      const silent = new Set(a.silent.map((r) => r.target_id));
      const rows = list ? [...list.querySelectorAll("tr[data-target]")] : [];
      for (const row of rows) if (!silent.has(row.dataset.target)) row.remove(); // answered: off the list
      const listed = new Set(rows.map((row) => row.dataset.target));
      for (const r of a.silent) {
        if (!listed.has(r.target_id)) patchable = false;
        else put(`${a.id}.${r.target_id}.step`, r.step === 0 ? "首轮" : `第 ${r.step} 步`);
      }
    }
    if (!patchable) outdated(false);
  };

  const source = new EventSource("/console/events");
  source.addEventListener("board", (event) => {
    live.hidden = false;
    live.textContent = "● 实时更新";
    apply(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    live.textContent = "○ 连接中断，正在重连…";
  });
})();
