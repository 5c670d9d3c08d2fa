// The chat page: conversations over the REST API (this page's session), events over the WebSocket.
// Everything the agent or a tool writes is untrusted: Markdown goes through DOMPurify, plain text
// through textContent, and the page's Content-Security-Policy runs no inline script at all.
"use strict";

(() => {
  const app = document.getElementById("app");
  const tenant = app.dataset.tenant;
  const only = app.dataset.only;
  const api = `/api/tenants/${tenant}/conversations`;
  const $ = (id) => document.getElementById(id);
  const TERMINAL = new Set(["run.completed", "run.failed", "run.interrupted"]);

  let current = null; // the open conversation's id
  let socket = null;
  let lastSeq = 0;
  let retries = 0;
  let activeRun = null;
  const runs = new Map(); // run id → its DOM parts

  // --- HTTP ---------------------------------------------------------------------------------

  function csrfToken() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function call(method, path, body) {
    const headers = { "X-CSRFToken": csrfToken() };
    let payload = body;
    if (body && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new Error(data && data.error ? data.error.message : `HTTP ${response.status}`);
    return data;
  }

  // --- rendering ------------------------------------------------------------------------------

  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });

  function markdown(target, text) {
    target.innerHTML = DOMPurify.sanitize(marked.parse(text, { async: false }), { FORBID_TAGS: ["style", "form"] });
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown() {
    const list = $("messages");
    list.scrollTop = list.scrollHeight;
  }

  function runView(runId) {
    let view = runs.get(runId);
    if (!view) {
      const root = element("article", "run");
      root.dataset.run = runId;
      const status = element("p", "status");
      root.append(status);
      $("messages").append(root);
      view = { root, status, text: null, buffer: "", tools: new Map(), pending: false };
      runs.set(runId, view);
    }
    return view;
  }

  function container(view, parent) {
    // Subagent activity nests under the tool call that started it.
    if (parent && view.tools.has(parent)) return view.tools.get(parent).querySelector(".nested");
    return view.root;
  }

  function setStatus(view, text, state) {
    view.status.textContent = text;
    view.status.dataset.state = state || "";
  }

  function streamText(view, data) {
    if (data.kind === "thinking") return; // shown once whole, collapsed
    if (!view.text) {
      view.text = element("div", "assistant markdown");
      container(view, data.parent_tool_use_id).append(view.text);
      view.buffer = "";
    }
    view.buffer += data.text;
    if (!view.pending) {
      view.pending = true;
      requestAnimationFrame(() => {
        view.pending = false;
        if (view.text) markdown(view.text, view.buffer);
        scrollDown();
      });
    }
  }

  function block(view, data) {
    const b = data.block || {};
    const parent = data.parent_tool_use_id;
    if (b.type === "text") {
      const target = view.text || element("div", "assistant markdown");
      if (!view.text) container(view, parent).append(target);
      markdown(target, b.text || "");
      view.text = null; // the next text streams into a new block
    } else if (b.type === "thinking") {
      const details = element("details", "thinking");
      details.append(element("summary", "", "Thinking"), element("div", "", b.thinking || ""));
      container(view, parent).append(details);
    } else if (b.type === "tool_use") {
      view.text = null;
      const details = element("details", "tool");
      const summary = element("summary", "", `${b.name}`);
      summary.append(element("code", "", " " + toolLabel(b)));
      const input = element("pre", "input", JSON.stringify(b.input, null, 2));
      details.append(summary, input, element("pre", "result"), element("div", "nested"));
      details.dataset.tool = b.id;
      container(view, parent).append(details);
      view.tools.set(b.id, details);
    }
  }

  function toolLabel(b) {
    const input = b.input || {};
    const text = input.command || input.file_path || input.path || input.pattern || input.description || "";
    return String(text).slice(0, 120);
  }

  function toolResult(view, data) {
    const tool = view.tools.get(data.tool_use_id);
    if (!tool) return;
    const content = typeof data.content === "string" ? data.content : JSON.stringify(data.content, null, 2);
    tool.querySelector(".result").textContent = content + (data.truncated ? "\n… (truncated)" : "");
    tool.classList.toggle("error", Boolean(data.is_error));
  }

  function applyEvent(event) {
    if (event.seq <= lastSeq) return; // already shown (a replay after reconnecting)
    lastSeq = event.seq;
    const view = runView(event.run_id);
    const data = event.data || {};
    switch (event.type) {
      case "run.queued": {
        const user = element("div", "user", data.input);
        view.root.insertBefore(user, view.status);
        setStatus(view, "Queued…", "queued");
        setActive(event.run_id);
        break;
      }
      case "run.started":
        setStatus(view, data.offline_model ? `Running · ${data.model_display_name}` : "Running…", "running");
        $("model").textContent = data.model_display_name || "";
        break;
      case "message.delta":
        streamText(view, data);
        break;
      case "message":
        block(view, data);
        break;
      case "tool.result":
        toolResult(view, data);
        break;
      case "model.retry":
        setStatus(view, `The model is busy; retrying (attempt ${data.attempt})…`, "running");
        break;
      case "file.changed":
        refreshFiles();
        break;
      case "run.completed":
        finish(view, "", "completed", data);
        break;
      case "run.failed":
        finish(view, `Failed: ${(data.error && data.error.message) || "the run failed"}`, "failed", data);
        break;
      case "run.interrupted":
        finish(view, "Stopped", "interrupted", data);
        break;
    }
    view.root.append(view.status);
    scrollDown();
  }

  function finish(view, text, state, data) {
    view.text = null;
    const usage = data.usage;
    const showsCost = app.dataset.showsCost === "true";
    const cost = showsCost && usage && Number(usage.cost_usd) > 0 ? `$${Number(usage.cost_usd).toFixed(4)}` : "";
    setStatus(view, [text, cost].filter(Boolean).join(" · "), state);
    if (activeRun === view.root.dataset.run) setActive(null);
    // Once for a burst: opening a conversation replays every run's end.
    clearTimeout(budgetTimer);
    budgetTimer = setTimeout(refreshBudget, 300);
  }

  // --- what is left of the end user's budgets ---------------------------------------------------

  let budgetTimer = null;

  // The fullest of the day's and the month's limits, as the share left (in dollars too where the
  // tenant shows costs); nothing when this user has no limits.
  async function refreshBudget() {
    const user = encodeURIComponent(app.dataset.user);
    const budgets = await call("GET", `/api/tenants/${tenant}/budgets/users/${user}`).catch(() => null);
    const showsCost = app.dataset.showsCost === "true";
    let tightest = null;
    for (const [label, budget] of [["today", budgets?.day], ["this month", budgets?.month]]) {
      for (const [limit, remaining, unit] of [
        [budget?.limit_usd, budget?.remaining_usd, "usd"],
        [budget?.limit_calls, budget?.remaining_calls, "calls"],
      ]) {
        if (limit == null || Number(limit) <= 0) continue; // no limit of this kind
        const share = Number(remaining) / Number(limit);
        if (!tightest || share < tightest.share) tightest = { label, share, remaining, unit };
      }
    }
    const badge = $("budget");
    badge.hidden = !tightest;
    if (!tightest) return;
    const { label, remaining, share, unit } = tightest;
    if (unit === "calls") badge.textContent = `${remaining} model call${remaining === 1 ? "" : "s"} left ${label}`;
    else if (showsCost) badge.textContent = `$${Number(remaining).toFixed(2)} left ${label}`;
    else badge.textContent = `${Math.floor(share * 100)}% of your budget left ${label}`;
    badge.dataset.state = share <= 0 ? "spent" : share < 0.2 ? "low" : "ok";
  }

  function setActive(runId) {
    activeRun = runId;
    $("stop").hidden = !runId;
    $("send").disabled = Boolean(runId);
  }

  // --- the WebSocket, resumed from the last seq --------------------------------------------------

  async function connect() {
    if (!current) return;
    const conversation = current;
    $("connection").textContent = retries ? "Reconnecting…" : "Connecting…";
    let token;
    try {
      token = (await call("POST", `${api}/${conversation}/stream-token`)).token;
    } catch (error) {
      return reconnectLater(conversation);
    }
    if (conversation !== current) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws/tenants/${tenant}/conversations/${conversation}/?after=${lastSeq}`;
    const ws = new WebSocket(url, ["agent-events.v1", `token.${token}`]);
    socket = ws;
    ws.onopen = () => {
      retries = 0;
      $("connection").textContent = "";
      app.dataset.connected = "true";
    };
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.seq !== undefined) applyEvent(frame);
      else if (frame.type === "error") showError(frame.error.message);
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      delete app.dataset.connected;
      reconnectLater(conversation);
    };
  }

  function reconnectLater(conversation) {
    if (conversation !== current) return;
    retries += 1;
    $("connection").textContent = "Reconnecting…";
    setTimeout(connect, Math.min(500 * 2 ** retries, 10000));
  }

  function showError(message) {
    const note = element("p", "error", message);
    note.setAttribute("role", "alert");
    $("messages").append(note);
    scrollDown();
  }

  // --- conversations -----------------------------------------------------------------------------

  async function loadConversations() {
    const page = await call("GET", `${api}?limit=100`);
    const list = $("conversations");
    list.replaceChildren();
    const visible = page.results.filter((c) => c.status !== "archived" && (!only || c.id === only));
    for (const conversation of visible) {
      const item = element("li");
      const button = element("button", "conversation", conversation.title || "Untitled conversation");
      button.type = "button";
      button.dataset.id = conversation.id;
      if (conversation.id === current) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => open(conversation));
      item.append(button);
      list.append(item);
    }
    return visible;
  }

  async function open(conversation) {
    if (socket) {
      const old = socket;
      socket = null;
      old.close();
    }
    current = conversation.id;
    lastSeq = 0;
    retries = 0;
    runs.clear();
    setActive(conversation.active_run);
    $("messages").replaceChildren();
    $("title").value = conversation.title || "";
    app.classList.remove("show-sidebar");
    document.querySelectorAll("#conversations button").forEach((b) => {
      b.toggleAttribute("aria-current", b.dataset.id === current);
    });
    showSkills(conversation.skills);
    await Promise.all([connect(), refreshFiles()]);
    $("text").focus();
  }

  async function newConversation() {
    const conversation = await call("POST", api, { title: "" });
    await loadConversations();
    await open(conversation);
  }

  // --- files -------------------------------------------------------------------------------------

  async function refreshFiles() {
    if (!current) return;
    const files = await call("GET", `${api}/${current}/files`);
    const list = $("file-list");
    list.replaceChildren();
    for (const file of files) {
      const item = element("li", file.presented ? "presented" : "");
      const link = element("a", "", file.path);
      link.href = `${api}/${current}/files/${file.path.split("/").map(encodeURIComponent).join("/")}`;
      link.setAttribute("download", file.path.split("/").pop());
      item.append(link, element("span", "quiet", ` ${file.size.toLocaleString()} bytes`));
      if (file.presented) item.append(element("span", "badge", "from the agent"));
      list.append(item);
    }
    $("file-count").textContent = files.length ? `(${files.length})` : "";
  }

  // --- skills: which of the tenant's skills the conversation's runs may use -------------------------

  let choosable = []; // the enabled skills end users choose (the others are always on)

  async function loadSkills() {
    const skills = await call("GET", `/api/tenants/${tenant}/skills`).catch(() => []);
    choosable = skills.filter((skill) => skill.enabled && skill.user_selectable && skill.current_version);
  }

  // Every one checked while the conversation has no choice of its own (null: all of them).
  function showSkills(chosen) {
    $("skills").hidden = !choosable.length;
    const list = $("skill-list");
    list.replaceChildren(
      ...choosable.map((skill) => {
        const box = element("input");
        box.type = "checkbox";
        box.value = skill.name;
        box.checked = !chosen || chosen.includes(skill.name);
        box.addEventListener("change", chooseSkills);
        const label = element("label");
        label.append(box, " ", element("strong", "", skill.title || skill.name), " ");
        label.append(element("span", "quiet", skill.description));
        const item = element("li");
        item.append(label);
        return item;
      }),
    );
    countSkills();
  }

  function countSkills() {
    const boxes = Array.from(document.querySelectorAll("#skill-list input"));
    const on = boxes.filter((box) => box.checked).length;
    $("skill-count").textContent = on === boxes.length ? "(all)" : `(${on} of ${boxes.length})`;
  }

  async function chooseSkills() {
    if (!current) return;
    const boxes = Array.from(document.querySelectorAll("#skill-list input"));
    const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
    countSkills();
    const skills = chosen.length === boxes.length ? null : chosen;
    try {
      await call("PATCH", `${api}/${current}`, { skills });
      await loadConversations(); // the sidebar's conversations carry their choice
    } catch (error) {
      showError(error.message);
    }
  }

  // --- slash commands: the tenant's skills an end user may invoke as /name -------------------------

  let commands = [];
  let suggested = [];

  async function loadCommands() {
    commands = await call("GET", `/api/tenants/${tenant}/skills/slash-commands`).catch(() => []);
  }

  function suggest() {
    const typed = $("text").value.match(/^\/([a-z0-9-]*)$/);
    suggested = typed ? commands.filter((command) => command.name.startsWith(typed[1])) : [];
    const list = $("commands");
    list.replaceChildren(
      ...suggested.map((command, index) => {
        const item = element("li", "");
        item.setAttribute("role", "option");
        item.setAttribute("aria-selected", String(index === 0));
        item.append(element("strong", "", `/${command.name}`), element("span", "", command.title || command.description));
        // mousedown, not click: the textarea keeps its focus.
        item.addEventListener("mousedown", (event) => {
          event.preventDefault();
          pick(command);
        });
        return item;
      }),
    );
    list.hidden = suggested.length === 0;
  }

  function pick(command) {
    $("text").value = `/${command.name} `;
    suggested = [];
    $("commands").hidden = true;
    $("text").focus();
  }

  // --- sending -----------------------------------------------------------------------------------

  async function send(event) {
    event.preventDefault();
    const text = $("text").value;
    if (!text.trim() || !current) return;
    const files = $("attach").files;
    try {
      if (files.length) {
        const form = new FormData();
        form.append("text", text);
        for (const file of files) form.append("file", file);
        await call("POST", `${api}/${current}/messages`, form);
        $("attach").value = "";
        $("attached").textContent = "";
      } else if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(JSON.stringify({ type: "message", text }));
      } else {
        await call("POST", `${api}/${current}/messages`, { text });
      }
      $("text").value = "";
    } catch (error) {
      showError(error.message);
    }
  }

  function stop() {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "interrupt" }));
    else call("POST", `${api}/${current}/interrupt`).catch((error) => showError(error.message));
  }

  // --- wiring ------------------------------------------------------------------------------------

  $("composer").addEventListener("submit", send);
  $("text").addEventListener("input", suggest);
  $("text").addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === "Tab") && suggested.length && !event.isComposing) {
      event.preventDefault();
      pick(suggested[0]);
    } else if (event.key === "Escape" && suggested.length) {
      suggested = [];
      $("commands").hidden = true;
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-conversation").addEventListener("click", () => newConversation().catch((e) => showError(e.message)));
  $("toggle-sidebar").addEventListener("click", () => app.classList.toggle("show-sidebar"));
  $("attach").addEventListener("change", () => {
    $("attached").textContent = Array.from($("attach").files, (f) => f.name).join(", ");
  });
  $("title").addEventListener("change", () => {
    if (current) call("PATCH", `${api}/${current}`, { title: $("title").value }).then(loadConversations);
  });
  $("archive").addEventListener("click", async () => {
    if (!current) return;
    await call("POST", `${api}/${current}/archive`);
    current = null;
    const rest = await loadConversations();
    if (rest.length) await open(rest[0]);
    else await newConversation();
  });
  // A dropped connection, on demand (the browser tests cut the socket mid-run with it).
  document.addEventListener("cut-socket", () => socket && socket.close());
  document.addEventListener("visibilitychange", () => {
    // A laptop waking up: make sure the socket is alive; a dead one reconnects from the last seq.
    if (document.visibilityState === "visible" && current && (!socket || socket.readyState > WebSocket.OPEN)) {
      connect();
    }
  });

  loadCommands();
  refreshBudget();
  (async () => {
    await loadSkills();
    const conversations = await loadConversations();
    if (conversations.length) await open(conversations[0]);
    else if (!only) await newConversation();
  })().catch((error) => showError(error.message));
})();
