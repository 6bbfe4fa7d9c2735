// Issuing a warning, a little quicker: units found while typing, template text following the level and
// hazard until the officer edits it, and one click of 发布预警 issuing once. The page works without it.
"use strict";
(() => {
  const form = document.getElementById("issue-form");
  if (form) {
    const q = document.getElementById("unit-q");
    const found = document.getElementById("found");
    const fields = ["title", "text", "instructions"].map((n) => form.elements.namedItem(n));
    let offered = fields.map((f) => f.value); // what the template gave; a field differing from it was edited
    let timer = 0;

    const chosen = () => new Set([...form.querySelectorAll("input[name=units]:checked")].map((i) => i.value));

    const show = (items, total) => {
      found.replaceChildren();
      if (!q.value.trim()) return;
      if (!items.length) {
        const p = document.createElement("p");
        p.className = "muted";
        p.dataset.testid = "nothing-found";
        p.textContent = `没有找到“${q.value.trim()}”。`;
        found.append(p);
        return;
      }
      const head = document.createElement("p");
      head.className = "muted";
      head.textContent = total > items.length ? `找到 ${total} 个，显示前 ${items.length} 个：` : `找到 ${total} 个：`;
      const list = document.createElement("ul");
      list.className = "plain";
      const taken = chosen();
      for (const u of items) {
        const li = document.createElement("li");
        const label = document.createElement("label");
        label.className = "pick";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.name = "units";
        box.value = u.code;
        if (taken.has(u.code)) {
          label.classList.add("taken");
          label.textContent = `✓ ${u.name} ${u.code} 已选`;
          li.append(label);
          list.append(li);
          continue;
        }
        const code = document.createElement("span");
        code.className = "muted";
        code.textContent = u.code;
        label.append(box, ` ${u.name} `, code);
        const where = document.createElement("span");
        where.className = "muted";
        where.textContent = ` ${u.kind_label}${u.trail ? " · " + u.trail : ""}`;
        li.append(label, where);
        list.append(li);
      }
      found.append(head, list);
    };

    const search = async () => {
      const text = q.value.trim();
      if (!text) return show([], 0);
      const r = await fetch(`/console/alerts/units?q=${encodeURIComponent(text)}`, { credentials: "same-origin" });
      if (r.ok && q.value.trim() === text) {
        const body = await r.json();
        show(body.items, body.total);
      }
    };

    // a ticked result joins the chosen list at once, so it is plainly part of the warning
    found.addEventListener("change", (e) => {
      const box = e.target;
      if (box.name !== "units" || !box.checked) return;
      const label = box.closest("label");
      const mark = document.createElement("span");
      mark.className = "pick taken";
      mark.textContent = `✓ ${label.textContent.trim()} 已选`;
      const list = form.querySelector("[data-testid=chosen]");
      list.querySelector("[data-testid=none-chosen]")?.remove();
      label.replaceWith(mark);
      list.append(label);
    });

    q.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(search, 250);
    });
    q.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        clearTimeout(timer);
        search();
      }
    });

    const refill = async () => {
      if (fields.some((f, i) => f.value !== offered[i])) return; // edited by hand: leave it alone
      const params = new URLSearchParams();
      const level = form.querySelector("input[name=level]:checked");
      if (level) params.set("level", level.value);
      params.set("hazard", form.elements.namedItem("hazard").value);
      for (const code of chosen()) params.append("units", code);
      const r = await fetch(`/console/alerts/text?${params}`, { credentials: "same-origin" });
      if (!r.ok || fields.some((f, i) => f.value !== offered[i])) return;
      const body = await r.json();
      offered = [body.title, body.text, body.instructions];
      fields.forEach((f, i) => { f.value = offered[i]; });
    };
    form.addEventListener("change", (e) => {
      const t = e.target;
      if (t.name === "level" || t.name === "hazard" || t.name === "units") refill();
    });
  }

  // A second click while the first is on its way would issue the warning twice.
  const publish = document.getElementById("publish-form");
  if (publish) {
    publish.addEventListener("submit", (e) => {
      if (e.defaultPrevented || (e.submitter && e.submitter.value === "edit")) return;
      const button = document.getElementById("publish");
      setTimeout(() => { button.disabled = true; button.textContent = "正在发布…"; }, 0);
    });
  }
})();
