// The chat page: conversations over the REST API (this page's session), events over the WebSocket,
// drawn by the renderer shared with the admin's live page (conversations/events.js).
// Everything the agent or a tool writes is untrusted: Markdown goes through DOMPurify, plain text
// through textContent, and the page's Content-Security-Policy runs no inline script at all.
"use strict";

(() => {
  const app = document.getElementById("app");
  const tenant = app.dataset.tenant;
  const only = app.dataset.only;
  const api = `/api/tenants/${tenant}/conversations`;
  const $ = (id) => document.getElementById(id);
  const element = ConversationEvents.element;

  // The open conversation's id; null for a new one, which is made on the server with its first
  // message (so "New conversation" leaves no empty conversations behind).
  let current = null;
  let socket = null;
  let retries = 0;
  // The open conversation's runs not ended yet: its active run, and the messages waiting behind it.
  const unfinished = new Set();
  // What a message sent while a run is active does (its agent profile's busy_policy): reject | queue | steer |
  // interrupt. The latest run.started of the conversation says; until one has, the agent as the list of
  // agents describes it; refused when nothing says.
  let busyPolicy = "reject";

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

  // --- drawing: the shared renderer of the event vocabulary, with Markdown for the agent's text ------

  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });

  // `breaks`: a single line break stays one, so output the agent quotes (a command's lines) keeps its lines.
  function markdown(target, text) {
    const html = marked.parse(text, { async: false, breaks: true });
    target.innerHTML = DOMPurify.sanitize(html, { FORBID_TAGS: ["style", "form"] });
    target.querySelectorAll("pre").forEach(addCopyButton);
  }

  function addCopyButton(pre) {
    const button = element("button", "copy", "Copy");
    button.type = "button";
    button.setAttribute("aria-label", "Copy the code");
    button.addEventListener("click", async () => {
      const code = pre.querySelector("code") || pre;
      try {
        await copyText(code.textContent);
        button.textContent = "Copied";
      } catch (error) {
        button.textContent = "Copy failed";
      }
      setTimeout(() => (button.textContent = "Copy"), 1500);
    });
    pre.prepend(button);
  }

  // The Clipboard API needs a secure context (https, or localhost); elsewhere the older command does.
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const scratch = element("textarea");
    scratch.value = text;
    document.body.append(scratch);
    scratch.select();
    const copied = document.execCommand("copy");
    scratch.remove();
    if (!copied) throw new Error("copy refused");
  }

  function scrollDown() {
    const list = $("messages");
    list.scrollTop = list.scrollHeight;
  }

  const view = new ConversationEvents.ConversationView($("messages"), {
    markdown,
    cost: app.dataset.showsCost === "true",
    me: app.dataset.user,
    onChange: scrollDown,
    onRequest: (request) => ChatRequests.addControls(request, decide),
    onEvent: (event, data) => {
      $("empty").hidden = true;
      settlePending(event, data);
      if (event.type === "run.queued") {
        unfinished.add(event.run_id);
        showBusy();
        if (data.behind) offerCancel(event.run_id);
        if (data.attachments && data.attachments.length) refreshFiles();
      } else if (event.type === "run.started" || event.type === "run.resumed") {
        $("model").textContent = data.model_display_name || "";
        if (data.sandbox) $("unsandboxed").hidden = data.sandbox !== "unsandboxed";
        if (data.agent && data.agent.busy_policy) setBusyPolicy(data.agent.busy_policy);
      } else if (event.type === "file.changed" || event.type === "file.presented") {
        refreshFiles();
      } else if (event.type === "context.usage") {
        showContext(data);
      } else if (event.type === "conversation.titled") {
        showTitle(data.title);
      } else if (ConversationEvents.TERMINAL[event.type]) {
        unfinished.delete(event.run_id);
        showBusy();
        // Once for a burst: opening a conversation replays every run's end.
        clearTimeout(budgetTimer);
        budgetTimer = setTimeout(refreshBudget, 300);
      }
    },
  });

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

  // --- messages sent while a run is active: refused, or queued, steered into it, or interrupting it -------

  const WHILE_BUSY = {
    queue: "Your message waits its turn: it runs after the current answer.",
    steer: "Your message reaches the agent while it works.",
    interrupt: "Sending stops the current answer and starts on your message.",
  };

  function setBusyPolicy(policy) {
    busyPolicy = WHILE_BUSY[policy] ? policy : "reject";
    showBusy();
  }

  function showBusy() {
    const busy = unfinished.size > 0;
    $("stop").hidden = !busy;
    $("send").disabled = busy && busyPolicy === "reject";
    $("busy-hint").textContent = busy ? WHILE_BUSY[busyPolicy] || "" : "";
    $("busy-hint").hidden = !$("busy-hint").textContent;
  }

  // A queued message (its run's `run.queued` names the run it waits `behind`) may be dropped until it starts; its
  // run's status, which the run's next event replaces, carries the button.
  function offerCancel(runId) {
    const run = view.runs.get(runId);
    const cancel = element("button", "cancel", "Cancel");
    cancel.type = "button";
    cancel.setAttribute("aria-label", "Cancel this message");
    cancel.addEventListener("click", () => {
      cancel.disabled = true;
      call("POST", `${api}/${current}/runs/${runId}/cancel`).catch((error) => {
        cancel.disabled = false;
        showError(error.message);
      });
    });
    run.status.append(" ", cancel);
  }

  // A message sent to steer the running run has no event until the run takes it in (`message.steered`), or, when
  // the run ended first, until it runs on its own (its `run.queued`): a pending bubble shows it meanwhile.
  function acknowledged(text, reply) {
    const accepted = (reply && reply.run) || reply || {}; // the socket's ack, or the 202's body
    const message = accepted.message_id;
    if (accepted.disposition !== "steered" || !message || view.runs.has(message)) return;
    if (document.querySelector(`#messages .steered[data-message="${CSS.escape(message)}"]`)) return;
    const pending = element("div", "run pending");
    pending.dataset.message = message;
    const bubble = element("div", "user");
    bubble.append(element("div", "text", text), element("span", "when", "Sent to the agent as it works"));
    pending.append(bubble);
    $("messages").append(pending);
    scrollDown();
  }

  function settlePending(event, data) {
    for (const pending of document.querySelectorAll("#messages > .pending")) {
      const message = pending.dataset.message;
      if (message === event.run_id || (event.type === "message.steered" && message === data.message_id)) {
        pending.remove();
      }
    }
  }

  // --- the WebSocket, resumed from the last seq --------------------------------------------------

  // Frames the server answers once each (an ack or an error frame), in the order they were sent: an error
  // frame names no request, so a reply belongs to the oldest frame its socket still waits on.
  let awaiting = [];

  function request(frame) {
    return new Promise((resolve, reject) => {
      socket.send(JSON.stringify(frame));
      awaiting.push({ socket, resolve, reject });
    });
  }

  function replied(ws, frame) {
    const index = awaiting.findIndex((each) => each.socket === ws);
    const waiting = index < 0 ? null : awaiting.splice(index, 1)[0];
    if (frame.type === "ack") waiting?.resolve(frame);
    else if (waiting) waiting.reject(new Error(frame.error.message));
    else showError(frame.error.message); // a refused socket says why
  }

  function dropAwaiting(ws) {
    const lost = awaiting.filter((each) => each.socket === ws);
    awaiting = awaiting.filter((each) => each.socket !== ws);
    const error = new Error("The connection dropped before the server answered; look again, then try again.");
    error.dropped = true; // what was sent may have been taken: the events replayed on reconnecting will say
    for (const each of lost) each.reject(error);
  }

  // A decision or an answer (ChatRequests): over the socket, or REST while it is down.
  async function decide(item, body) {
    const approval = item.kind === "approval";
    if (socket && socket.readyState === WebSocket.OPEN) {
      const frame = approval ? { type: "approve", approval_id: item.id } : { type: "answer", question_id: item.id };
      return request({ ...frame, ...body });
    }
    return call("POST", `/api/tenants/${tenant}/${approval ? "approvals" : "questions"}/${item.id}`, body);
  }

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
    const url = `${scheme}://${location.host}/ws/tenants/${tenant}/conversations/${conversation}/?after=${view.lastSeq}`;
    const ws = new WebSocket(url, ["agent-events.v1", `token.${token}`]);
    socket = ws;
    ws.onopen = () => {
      retries = 0;
      $("connection").textContent = "";
      app.dataset.connected = "true";
    };
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.seq !== undefined) view.apply(frame);
      else if (frame.type === "ack" || frame.type === "error") replied(ws, frame);
    };
    ws.onclose = (event) => {
      dropAwaiting(ws);
      if (socket !== ws) return;
      delete app.dataset.connected;
      // 4400-4499: refused, and told why in an error frame (shown); trying again would not change it.
      if (event.code >= 4400 && event.code <= 4499) return;
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
    view.note(message, "error");
  }

  // --- conversations -----------------------------------------------------------------------------

  function conversationButton(conversation) {
    const button = element("button", "conversation", conversation.title || "Untitled conversation");
    button.type = "button";
    button.dataset.id = conversation.id;
    button.toggleAttribute("data-untitled", !conversation.title);
    return button;
  }

  // The title the platform gave the conversation after its first turn (`conversation.titled`). Opening a
  // conversation replays it: a title the user has set since stays.
  function showTitle(title) {
    if (!title) return;
    if (!$("title").value && document.activeElement !== $("title")) $("title").value = title;
    const button = document.querySelector(`#conversations button[data-untitled][data-id="${current}"]`);
    if (button) {
      button.textContent = title;
      button.removeAttribute("data-untitled");
    }
  }

  // Loads overlap (a rename's, a run's end's): only the latest one started may draw the list, or an answer
  // read before a rename was saved could put the old title back.
  let conversationLoads = 0;
  async function loadConversations() {
    const load = ++conversationLoads;
    const page = await call("GET", `${api}?status=active&limit=100`);
    const visible = page.results.filter((c) => !only || c.id === only);
    if (load !== conversationLoads) return visible;
    $("conversations").replaceChildren(
      ...visible.map((conversation) => {
        const button = conversationButton(conversation);
        button.toggleAttribute("aria-current", conversation.id === current);
        button.addEventListener("click", () => open(conversation));
        const item = element("li");
        item.append(button);
        return item;
      }),
    );
    return visible;
  }

  function closeSocket() {
    if (socket) {
      const old = socket;
      socket = null;
      old.close();
    }
    delete app.dataset.connected;
  }

  // Show a conversation (or, with null, a new one not made yet) and follow its events from the start.
  async function open(conversation) {
    closeSocket();
    current = conversation ? conversation.id : null;
    retries = 0;
    view.clear();
    $("empty").hidden = false; // until its first event
    const named = conversation && conversation.agent ? conversation.agent.name : null;
    const agent = agents.find((each) => (named ? each.name === named : each.is_default));
    busyPolicy = (agent && agent.busy_policy) || "reject";
    unfinished.clear();
    if (conversation && conversation.active_run) unfinished.add(conversation.active_run);
    showBusy();
    $("title").value = conversation ? conversation.title || "" : "";
    $("archive").disabled = !conversation;
    app.classList.remove("show-sidebar");
    document.querySelectorAll("#conversations button").forEach((b) => {
      b.toggleAttribute("aria-current", b.dataset.id === current);
    });
    showSkills(conversation ? conversation.skills : null);
    showAgent(conversation);
    showContext(conversation ? conversation.context_usage : null);
    await Promise.all([connect(), refreshFiles()]);
    // Not from under a dialog the user opened meanwhile (archiving this conversation, say).
    if (!document.querySelector("dialog[open]")) $("text").focus();
  }

  // The title, agent and skills chosen so far go with it; its first message follows.
  async function createConversation() {
    const body = { title: $("title").value, skills: chosenSkills() };
    const agent = agents.find((each) => each.name === $("agent").value);
    if (agent && !agent.is_default) body.agent = agent.name; // none: the tenant's default, whichever it is then
    const conversation = await call("POST", api, body);
    current = conversation.id;
    return conversation;
  }

  // --- archiving: asked first, and undone from the list of archived conversations -------------------

  function askToArchive() {
    if (!current) return;
    $("archive-title").textContent = $("title").value || "Untitled conversation";
    $("archive-dialog").showModal();
  }

  async function archive() {
    $("archive-dialog").close();
    await call("POST", `${api}/${current}/archive`);
    current = null;
    const rest = await loadConversations();
    await open(rest.length ? rest[0] : null);
    if ($("archived").open) await loadArchived();
  }

  async function loadArchived() {
    const page = await call("GET", `${api}?status=archived&limit=100`);
    const archived = page.results.filter((c) => !only || c.id === only);
    $("archived-list").replaceChildren(
      ...archived.map((conversation) => {
        const restore = element("button", "restore", "Restore");
        restore.type = "button";
        restore.setAttribute("aria-label", `Restore ${conversation.title || "Untitled conversation"}`);
        restore.addEventListener("click", () => unarchive(conversation).catch((e) => showError(e.message)));
        const item = element("li");
        item.append(element("span", "title", conversation.title || "Untitled conversation"), restore);
        return item;
      }),
    );
    $("archived-count").textContent = archived.length ? `(${archived.length})` : "";
    $("archived-empty").hidden = archived.length > 0;
  }

  async function unarchive(conversation) {
    const restored = await call("PATCH", `${api}/${conversation.id}`, { status: "active" });
    await Promise.all([loadConversations(), loadArchived()]);
    await open(restored);
  }

  // --- files -------------------------------------------------------------------------------------

  async function refreshFiles() {
    const files = current ? await call("GET", `${api}/${current}/files`) : [];
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

  // --- agents: a new conversation's is chosen among those the tenant offers; the header names it ------

  let agents = []; // [{name, description, kind, is_default, busy_policy}], the default first

  async function loadAgents() {
    agents = await call("GET", `/api/tenants/${tenant}/chat-agents`).catch(() => []);
    $("agent").replaceChildren(
      ...agents.map((agent) => {
        const option = element("option", "", agent.kind === "chat" ? `${agent.name} (chat)` : agent.name);
        option.value = agent.name;
        option.title = agent.description;
        return option;
      }),
    );
  }

  // A new conversation offers the choice (when there is one); an open one names its agent.
  function showAgent(conversation) {
    const picking = !conversation && agents.length > 1;
    const fallback = conversation ? agents.find((agent) => agent.is_default) : agents[0];
    const chosen = conversation && conversation.agent;
    $("agent-name").textContent = chosen ? chosen.name : fallback ? fallback.name : "";
    $("agent-name").title = chosen && chosen.version ? `Pinned to version ${chosen.version}` : "";
    $("agent-picker").hidden = !picking;
    $("agent-shown").hidden = picking || !$("agent-name").textContent;
    describeAgent();
  }

  // Before the first message, what the chosen agent is for.
  function describeAgent() {
    const agent = current ? null : agents.find((each) => each.name === $("agent").value) || agents[0];
    const about = $("agent-description");
    about.replaceChildren();
    about.hidden = !(agent && agent.description);
    if (!about.hidden) about.append(element("strong", "", agent.name), ` · ${agent.description}`);
  }

  // --- how full the conversation's context window is: set when it opens, then by each context.usage ----

  function compact(tokens) {
    if (tokens < 1000) return String(tokens);
    return `${(tokens / 1000).toFixed(tokens < 10000 ? 1 : 0)}k`;
  }

  function showContext(data) {
    const usage = ConversationEvents.contextUsage(data);
    $("context").hidden = !usage;
    if (!usage) return;
    const share = `${Math.round(usage.percent)}%`;
    const known = usage.used !== null && usage.window !== null;
    $("context-label").textContent = known ? `${compact(usage.used)} / ${compact(usage.window)} · ${share}` : share;
    $("context-meter").value = usage.percent;
    const description = `Context window: ${ConversationEvents.describeContext(usage)}`;
    $("context-meter").setAttribute("aria-label", description);
    const categories = usage.categories.map((c) => `${c.name}: ${c.tokens.toLocaleString("en")} tokens`);
    $("context").title = [description, ...categories].join("\n");
    $("context").dataset.state = usage.percent >= 90 ? "full" : usage.percent >= 70 ? "high" : "ok";
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

  // The ticked skills; null when all are (the conversation then follows the tenant's list).
  function chosenSkills() {
    const boxes = Array.from(document.querySelectorAll("#skill-list input"));
    const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
    return chosen.length === boxes.length ? null : chosen;
  }

  async function chooseSkills() {
    countSkills();
    if (!current) return; // a new conversation is made with them
    try {
      await call("PATCH", `${api}/${current}`, { skills: chosenSkills() });
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
    if (!text.trim()) return;
    const files = $("attach").files;
    try {
      if (!current) {
        // A new conversation: made now, its message sent over REST, then followed from its first event.
        const conversation = await createConversation();
        await call("POST", `${api}/${current}/messages`, messageBody(text, files));
        clearComposer();
        await loadConversations();
        await open(conversation);
        return;
      }
      if (files.length) {
        acknowledged(text, await call("POST", `${api}/${current}/messages`, messageBody(text, files)));
      } else if (socket && socket.readyState === WebSocket.OPEN) {
        const refused = (error) => error.dropped || showError(error.message);
        request({ type: "message", text }).then((ack) => acknowledged(text, ack), refused);
      } else {
        acknowledged(text, await call("POST", `${api}/${current}/messages`, { text }));
      }
      clearComposer();
    } catch (error) {
      showError(error.message);
    }
  }

  // Files go as multipart (stored in the workspace before the run starts), a bare message as JSON.
  function messageBody(text, files) {
    if (!files.length) return { text };
    const form = new FormData();
    form.append("text", text);
    for (const file of files) form.append("file", file);
    return form;
  }

  function clearComposer() {
    $("text").value = "";
    $("attach").value = "";
    $("attached").textContent = "";
  }

  function stop() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      request({ type: "interrupt" }).catch((error) => error.dropped || showError(error.message));
    } else {
      call("POST", `${api}/${current}/interrupt`).catch((error) => showError(error.message));
    }
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
  // A link to one conversation has no "New conversation" button.
  $("new-conversation")?.addEventListener("click", () => {
    if (current) open(null).catch((e) => showError(e.message));
    else $("text").focus(); // already a new one
  });
  $("toggle-sidebar").addEventListener("click", () => app.classList.toggle("show-sidebar"));
  $("attach").addEventListener("change", () => {
    $("attached").textContent = Array.from($("attach").files, (f) => f.name).join(", ");
  });
  $("agent").addEventListener("change", describeAgent);
  $("title").addEventListener("change", () => {
    if (current) call("PATCH", `${api}/${current}`, { title: $("title").value }).then(loadConversations);
  });
  $("archive").addEventListener("click", askToArchive);
  $("archive-confirm").addEventListener("click", () => archive().catch((e) => showError(e.message)));
  $("archive-cancel").addEventListener("click", () => $("archive-dialog").close());
  $("archived").addEventListener("toggle", () => {
    if ($("archived").open) loadArchived().catch((e) => showError(e.message));
  });
  // An example of the empty state goes into the composer, to send as it is or to change first.
  document.querySelectorAll("#empty [data-example]").forEach((button) => {
    button.addEventListener("click", () => {
      $("text").value = button.dataset.example;
      $("text").focus();
    });
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
    await Promise.all([loadSkills(), loadAgents()]);
    const conversations = await loadConversations();
    await open(conversations.length ? conversations[0] : null);
    app.dataset.ready = "true";
  })().catch((error) => showError(error.message));
})();
