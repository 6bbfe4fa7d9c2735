// The live board: a snapshot arrives over server-sent events whenever a number changes, and is put in
// place here, and the alarm sounds when the snapshot says so. The page is complete without this file (and then
// refreshes itself every 30 s).
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
  // a township's tile on the map: its colour by the share answered, as views/tiles.py bands it
  const band = (p) => (!p.planned ? "none" : p.answered >= p.planned ? "4" : String(Math.min(3, Math.floor((4 * p.answered) / p.planned))));
  const tile = (key, p) => {
    const el = root.querySelector(`[data-tile="${CSS.escape(key)}"]`);
    if (!el) return;
    el.className = `tile band-${band(p)}`;
    el.querySelector("[data-tile-silent]").textContent = String(p.silent);
    el.title = `${el.querySelector(".tile-name").textContent}：应叫应 ${p.planned}，已应答 ${p.answered}（${pct(p.answered, p.planned)}%），未应答 ${p.silent}`;
  };
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
  // Something the page cannot patch (a new alert, one ended, a new name on a list): the page itself is read
  // again and its cards put in place of these, a new alert's card added. A card the officer is busy in (a reason
  // being typed, a menu open, a button in focus) is left as it is and the banner offers the reload instead.
  const edited = (el) => {
    if (el.tagName === "SELECT") return [...el.options].some((o) => o.selected !== o.defaultSelected);
    if (el.type === "checkbox" || el.type === "radio") return el.checked !== el.defaultChecked;
    return el.type !== "hidden" && el.value !== el.defaultValue;
  };
  const busy = (card) =>
    card.contains(document.activeElement) ||
    card.querySelector("details[open]") ||
    [...card.querySelectorAll("input, select, textarea")].some(edited);
  let fetching = null;
  let again = false;
  const swap = (html) => {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    const next = fresh.querySelector("[data-board]");
    if (!next) return;
    let kept = false;
    const old = new Map([...root.querySelectorAll("[data-alert]")].map((el) => [el.dataset.alert, el]));
    const cards = [...next.querySelectorAll("[data-alert]")];
    for (const [id, el] of old) if (!cards.some((c) => c.dataset.alert === id)) el.remove(); // ended
    let before = null;
    for (const card of cards.reverse()) {  // newest first on the page: put each before the one after it
      const mine = old.get(card.dataset.alert);
      let placed = card;
      if (mine && mine.isConnected && busy(mine)) {
        kept = true;
        placed = mine;
      } else if (mine && mine.isConnected) {
        mine.replaceWith(card);
      } else {
        root.insertBefore(card, before || null);
      }
      before = placed;
    }
    const none = root.querySelector("[data-testid=no-active]");
    const freshNone = next.querySelector("[data-testid=no-active]");
    if (none && !freshNone) none.remove();
    else if (!none && freshNone) root.prepend(freshNone);
    const ended = document.querySelector("[data-ended]");
    const freshEnded = fresh.querySelector("[data-ended]");
    if (ended && freshEnded) ended.replaceWith(freshEnded);
    stale.hidden = !kept;
    tick();
    if (latest) alarm(latest);
  };
  const refetch = () => {
    if (fetching) {
      again = true;
      return;
    }
    fetching = fetch("/console/", { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then((r) => (r.ok && !r.redirected ? r.text().then(swap) : (stale.hidden = false)))
      .catch(() => (stale.hidden = false))
      .finally(() => {
        fetching = null;
        if (again) {
          again = false;
          setTimeout(refetch, 2000); // during a storm names change every second: a read of the page at most every 2 s
        }
      });
  };
  const outdated = () => refetch();

  // The alarm: the server says, per alert, whether and why to sound (Alarm.level in the snapshot: a new alert,
  // someone at the last escalation step, someone still silent after it). The officer silences one alert at the
  // level it has reached; it sounds again only if it goes higher. Kept in localStorage, so a reload keeps it.
  const SILENCED = "jiaoying.silenced";
  const NOTIFIED = "jiaoying.notified";
  const REPEAT_MS = 30000;
  const baseTitle = document.title.replace(/^【[^】]*】/, "");
  const soundOn = document.getElementById("sound-on");
  const notifyOn = document.getElementById("notify-on");
  const read = (key) => {
    try {
      return JSON.parse(localStorage.getItem(key) || "{}");
    } catch {
      return {};
    }
  };
  const write = (key, value) => {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      /* private mode: the choice lasts as long as the page */
    }
  };
  let latest = null;
  let repeat = null;
  const sounded = new Set();
  const ring = () => {
    const sound = new Audio("/static/alarm.wav");
    root.dataset.rings = String(Number(root.dataset.rings || 0) + 1);
    const played = sound.play();
    if (played) played.then(() => (soundOn.hidden = true)).catch(() => (soundOn.hidden = false));
  };
  const notify = (a) => {
    if (!window.Notification || Notification.permission !== "granted") return;
    const done = read(NOTIFIED);
    if ((done[a.id] || 0) >= a.alarm.level) return;
    done[a.id] = a.alarm.level;
    write(NOTIFIED, done);
    const n = new Notification(`【${a.alarm.label}】${a.title}`, { body: a.alarm.text, tag: `jiaoying-${a.id}` });
    n.onclick = () => window.focus();
  };
  const alarm = (board) => {
    latest = board;
    const silenced = read(SILENCED);
    const active = new Set(board.alerts.map((a) => String(a.id)));
    for (const id of Object.keys(silenced)) if (!active.has(id)) delete silenced[id]; // ended: forget it
    write(SILENCED, silenced);
    const loud = [];
    for (const a of board.alerts) {
      const level = a.alarm.level;
      const quiet = (silenced[a.id] || 0) >= level;
      if (level && !quiet) loud.push(a);
      const box = root.querySelector(`[data-alarm-of="${a.id}"]`);
      if (!box) continue;
      box.hidden = !level;
      box.className = `alarm alarm-${level}${quiet ? " quiet" : ""}`;
      const text = box.querySelector("[data-alarm-text]");
      text.textContent = a.alarm.text;
      text.title = a.alarm.label;
      box.querySelector("[data-silence]").hidden = !level || quiet;
      box.querySelector("[data-silenced]").hidden = !level || !quiet;
    }
    root.dataset.alarm = loud.map((a) => a.id).join(",");
    if (!loud.length) {
      document.title = baseTitle;
      clearInterval(repeat);
      repeat = null;
      return;
    }
    const top = loud.reduce((x, y) => (y.alarm.level > x.alarm.level ? y : x));
    document.title = `【${top.alarm.label}】${baseTitle}`;
    const fresh = loud.filter((a) => !sounded.has(`${a.id}:${a.alarm.level}`));
    for (const a of fresh) sounded.add(`${a.id}:${a.alarm.level}`);
    if (fresh.length) ring();
    loud.forEach(notify);
    if (window.Notification && Notification.permission === "default") notifyOn.hidden = false;
    if (!repeat) repeat = setInterval(ring, REPEAT_MS);
  };
  root.addEventListener("click", (event) => {
    const button = event.target.closest("[data-silence]");
    if (!button || !latest) return;
    const a = latest.alerts.find((x) => String(x.id) === button.dataset.silence);
    if (!a) return;
    const silenced = read(SILENCED);
    silenced[a.id] = a.alarm.level;
    write(SILENCED, silenced);
    alarm(latest);
  });
  soundOn.addEventListener("click", () => {
    soundOn.hidden = true;
    ring(); // a click lets the page play sound from now on
  });
  notifyOn.addEventListener("click", () => {
    Notification.requestPermission().then(() => {
      notifyOn.hidden = Notification.permission !== "default";
      if (latest) alarm(latest);
    });
  });

  const apply = (board) => {
    skew = Date.parse(board.generated_at) - Date.now();
    const shown = [...root.querySelectorAll("[data-alert]")].map((el) => el.dataset.alert).join(",");
    if (shown !== board.alerts.map((a) => String(a.id)).join(",")) return outdated();
    let patchable = true;
    for (const a of board.alerts) {
      for (const f of FIELDS) put(`${a.id}.total.${f}`, a.totals[f]);
      put(`${a.id}.total.pct`, pct(a.totals.answered, a.totals.planned));
      bar(`${a.id}.total`, a.totals);
      for (const t of a.townships) {
        const key = `${a.id}.${t.code || "county"}`;
        if (!root.querySelector(`[data-row="${CSS.escape(key)}"]`)) return outdated(); // a new township
        for (const f of FIELDS) put(`${key}.${f}`, t[f]);
        bar(key, t);
        tile(key, t);
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
    if (!patchable) outdated();
  };

  const source = new EventSource("/console/events");
  source.addEventListener("board", (event) => {
    live.hidden = false;
    live.textContent = "● 实时更新";
    const board = JSON.parse(event.data);
    apply(board);
    alarm(board);
  });
  source.addEventListener("error", () => {
    live.textContent = "○ 连接中断，正在重连…";
  });
})();
