// One drawing of the event vocabulary (README "Events"), shared by every page that follows a
// conversation as it happens: the end users' chat page and the operators' live page in the admin.
// The admin's stored transcript (templates/admin/conversations/conversation/change_form.html) draws
// the same structure on the server, with the same class names and the same stylesheet.
//
// What a run looks like, whichever page shows it:
//   article.run[data-run]
//     div.user            the message as the user typed it, and chips for the files it brought
//     div.assistant       text the agent wrote (Markdown where the page gives a renderer)
//     details.thinking    thinking, collapsed
//     details.tool        a tool call: its input, a subagent's activity (details.subagent), its result
//     section.request     under its tool call: an approval it waits for, or the agent's question, and how it
//                         was settled (data-state pending / allowed / denied / answered / expired / cancelled)
//     div.structured      the run's structured output (run.completed), as formatted JSON
//     p.meta              operators only: seq numbers, usage, the worker, events the page has no words for
//     p.status            queued / running / how the run ended (a failed run's one error message)
//
// Everything in an event is untrusted (model and tool output): text goes in through textContent, and
// Markdown only through the page's own renderer, which must sanitize.
"use strict";

window.ConversationEvents = (() => {
  const TERMINAL = { "run.completed": "completed", "run.failed": "failed", "run.interrupted": "interrupted" };

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function pretty(value) {
    try {
      return JSON.stringify(value, null, 2);
    } catch (error) {
      return String(value);
    }
  }

  function plainText(target, text) {
    target.textContent = text;
  }

  // What a tool call is about, in a few words: its command, file or pattern.
  function toolLabel(block) {
    const input = block.input || {};
    const text = input.command || input.file_path || input.path || input.pattern || input.description || "";
    return String(text).slice(0, 120);
  }

  // The subagent a tool call starts (the Agent tool's `subagent_type`), or "" for any other call.
  function subagentType(block) {
    const type = block.input && block.input.subagent_type;
    return typeof type === "string" ? type : "";
  }

  // How full the context window is, from a `context.usage` event or a conversation's `context_usage`: the
  // SDK's get_context_usage keys (totalTokens, maxTokens, percentage, categories) or their snake_case.
  // null when it says too little to show. (conversations/transcripts.py reads it the same way.)
  function contextUsage(data) {
    if (!data || typeof data !== "object") return null;
    const number = (...keys) => {
      for (const key of keys) if (typeof data[key] === "number" && Number.isFinite(data[key])) return data[key];
      return null;
    };
    const used = number("totalTokens", "total_tokens");
    const size = number("maxTokens", "max_tokens");
    let percent = number("percentage", "percent");
    if (percent === null && used !== null && size) percent = (used * 100) / size;
    if (percent === null) return null;
    const categories = (Array.isArray(data.categories) ? data.categories : [])
      .filter((category) => category && category.name)
      .map((category) => ({ name: String(category.name), tokens: Number(category.tokens) || 0 }));
    return { used, window: size, percent: Math.min(Math.max(percent, 0), 100), categories };
  }

  function describeContext(usage) {
    const share = `${Math.round(usage.percent)}%`;
    if (usage.used === null || usage.window === null) return `${share} of the context window`;
    return `${usage.used.toLocaleString("en")} of ${usage.window.toLocaleString("en")} tokens (${share})`;
  }

  // The files a message brought, as `{path, size}` (older events have none).
  function attachments(data) {
    return Array.isArray(data.attachments) ? data.attachments : [];
  }

  class ConversationView {
    /**
     * @param {HTMLElement} root where the runs are drawn (emptied by clear())
     * @param {object} options
     *   operator: draw what operators need too (seq numbers, usage, sessions, unknown events)
     *   markdown(target, text): fill target with the rendered text (default: plain text)
     *   cost: add each run's cost to how it ended
     *   onEvent(event, data): called after each new event is drawn (the page's own bookkeeping)
     *   onChange(): called whenever the drawing changed (to keep the newest in view)
     *   me: the end user who is looking (their own decisions read "you")
     *   onRequest(request): a request was drawn pending, {kind, id, data, card}; the page may add its controls
     *     to the card (class `control`: removed when the request is settled, whoever settled it)
     */
    constructor(root, options = {}) {
      this.root = root;
      this.operator = Boolean(options.operator);
      this.markdown = options.markdown || plainText;
      this.cost = Boolean(options.cost);
      this.onEvent = options.onEvent || (() => {});
      this.onChange = options.onChange || (() => {});
      this.me = options.me || "";
      this.onRequest = options.onRequest || (() => {});
      this.clear();
    }

    clear() {
      this.root.replaceChildren();
      this.runs = new Map();
      this.requests = new Map(); // approval and question ids → their cards
      this.lastSeq = 0; // the highest seq drawn; a replay after reconnecting starts after it
    }

    /** Draw one event; false when its seq was drawn already (replays overlap live delivery). */
    apply(event) {
      if (typeof event.seq !== "number" || event.seq <= this.lastSeq) return false;
      this.lastSeq = event.seq;
      const run = this.run(event.run_id);
      const data = event.data && typeof event.data === "object" ? event.data : {};
      const draw = DRAW[event.type];
      if (draw) draw(this, run, data, event);
      else if (TERMINAL[event.type]) this.finish(run, TERMINAL[event.type], data, event);
      else this.meta(run, `${event.type} #${event.seq}`, data);
      run.root.append(run.status); // how the run stands stays last
      this.onEvent(event, data);
      this.onChange();
      return true;
    }

    /** A line of the page's own (an error frame, an acknowledgement), after everything drawn. */
    note(text, className) {
      const node = element("p", className || "meta", text);
      if (className === "error") node.setAttribute("role", "alert");
      this.root.append(node);
      this.onChange();
      return node;
    }

    run(runId) {
      let run = this.runs.get(runId);
      if (!run) {
        const root = element("article", "run");
        root.dataset.run = runId;
        const status = element("p", "status");
        root.append(status);
        this.root.append(root);
        run = { root, status, tools: new Map(), messages: new Map(), streams: new Map() };
        this.runs.set(runId, run);
      }
      return run;
    }

    // A subagent's activity nests in the tool call that started it (the events' `parent_tool_use_id`); when
    // that call is not drawn (older than what was loaded), it stays in its run.
    container(run, parent) {
      const tool = parent && run.tools.get(parent);
      if (!tool) return run.root;
      let section = tool.querySelector(":scope > .subagent");
      if (!section) {
        // Folded on its own, between the call's input and its result, labelled with the subagent's type.
        section = element("details", "subagent");
        section.open = true;
        const title = element("summary", "", "Subagent");
        if (tool.dataset.subagent) title.append(" ", element("strong", "", tool.dataset.subagent));
        section.append(title, element("div", "nested"));
        tool.insertBefore(section, tool.querySelector(":scope > .result"));
      }
      return section.querySelector(":scope > .nested");
    }

    seq(node, event) {
      if (this.operator) (node.querySelector(":scope > summary") || node).prepend(element("span", "seq", `#${event.seq}`));
      return node;
    }

    // Operators see what the end user does not; events the page has no words for show their data (or a
    // text of the page's own), folded. A subagent's (`parent`: its tool call's id) go with its activity.
    meta(run, text, data, parent) {
      if (!this.operator) return null;
      const where = this.container(run, parent);
      const node = element("p", "meta", text);
      if (data !== undefined) {
        const details = element("details", "meta");
        details.append(element("summary", "", text), element("pre", "", typeof data === "string" ? data : pretty(data)));
        where.append(details);
        return details;
      }
      where.append(node);
      return node;
    }

    setStatus(run, text, state) {
      run.status.textContent = text;
      run.status.dataset.state = state || "";
      run.status.toggleAttribute("role", false);
    }

    userMessage(run, data, event) {
      const user = element("div", "user");
      if (this.operator) user.append(element("span", "who", `User${data.user_id ? ` ${data.user_id}` : ""}`));
      // `text` is what the user typed; `input` (all older events have only that) is what the agent read.
      user.append(element("div", "text", data.text ?? data.input ?? ""));
      const files = attachments(data);
      if (files.length) {
        const chips = element("ul", "attachments");
        chips.setAttribute("aria-label", "Attached files");
        for (const file of files) {
          const chip = element("li", "attachment", file.path);
          if (file.size !== undefined) chip.title = `${Number(file.size).toLocaleString()} bytes`;
          chips.append(chip);
        }
        user.append(chips);
      }
      run.root.insertBefore(this.seq(user, event), run.status);
      return user;
    }

    // message.delta: the answer as it streams, replaced by the complete `message` block (which heals
    // a missed delta). Thinking is shown once whole, collapsed.
    stream(run, data) {
      if (data.kind === "thinking") return;
      const parent = data.parent_tool_use_id || "";
      let stream = run.streams.get(parent);
      if (!stream) {
        stream = { node: element("div", "assistant markdown"), text: "", pending: false, done: false };
        this.container(run, parent).append(stream.node);
        run.streams.set(parent, stream);
      }
      stream.text += data.text || "";
      if (!stream.pending) {
        // Markdown is drawn once a frame, not once a token.
        stream.pending = true;
        requestAnimationFrame(() => {
          stream.pending = false;
          if (!stream.done) this.markdown(stream.node, stream.text);
          this.onChange();
        });
      }
    }

    block(run, data, event) {
      const block = data.block && typeof data.block === "object" ? data.block : {};
      const parent = data.parent_tool_use_id || "";
      const here = this.container(run, parent);
      let node;
      if (block.type === "text") {
        const stream = run.streams.get(parent);
        run.streams.delete(parent);
        node = stream ? stream.node : here.appendChild(element("div", "assistant markdown"));
        if (stream) stream.done = true; // a frame still to come must not draw the partial text over it
        this.markdown(node, block.text || "");
      } else if (block.type === "thinking") {
        node = element("details", "thinking");
        node.append(element("summary", "", "Thinking"), element("div", "body", block.thinking || ""));
        here.append(node);
      } else if (block.type === "tool_use") {
        run.streams.delete(parent); // what follows the call streams into a new block
        node = element("details", "tool");
        node.open = this.operator;
        node.dataset.tool = block.id || "";
        const summary = element("summary");
        const agent = subagentType(block);
        summary.append(element("strong", "", block.name || "?"), " ", element("code", "", toolLabel(block)));
        if (agent) {
          summary.append(" ", element("span", "agent-type", agent));
          node.dataset.subagent = agent;
        }
        node.append(summary, element("pre", "input", pretty(block.input)), element("pre", "result"));
        here.append(node);
        if (block.id) run.tools.set(block.id, node);
      } else {
        node = this.meta(run, `message #${event.seq}`, block);
      }
      if (node && data.message_id) {
        node.dataset.message = data.message_id;
        run.messages.set(data.message_id, [...(run.messages.get(data.message_id) || []), node]);
      }
      if (node && node.parentNode === here) this.seq(node, event);
    }

    toolResult(run, data, event) {
      const tool = run.tools.get(data.tool_use_id);
      const content = typeof data.content === "string" ? data.content : pretty(data.content);
      if (!tool) {
        this.meta(run, `tool.result #${event.seq}`, data); // its call is outside what was drawn
        return;
      }
      tool.querySelector(":scope > .result").textContent = content + (data.truncated ? "\n… (truncated)" : "");
      tool.classList.toggle("error", Boolean(data.is_error));
    }

    // A failed model call: the CLI writes its own words as the agent's message (an API error, an
    // internal address). The run's end says what went wrong, once and in the user's terms.
    messageFailed(run, data) {
      for (const node of run.messages.get(data.message_id) || []) node.remove();
      run.messages.delete(data.message_id);
      this.meta(run, `The model call failed: ${data.error || "?"}`);
    }

    finish(run, state, data, event) {
      run.streams.clear();
      delete run.root.dataset.behind;
      // Nobody can decide for a run that is over (its requests' own `cancelled` follows, where it was stored).
      for (const card of run.root.querySelectorAll(".request[data-state='pending']")) {
        const who = card.dataset.kind === "question" ? "answered" : "decided";
        this.closeRequest(card, "cancelled", `The run ended before anyone ${who}.`);
      }
      const usage = data.usage || {};
      const cost = Number(usage.cost_usd);
      const parts = [];
      if (state === "failed") parts.push((data.error && data.error.message) || "The run failed.");
      else if (state === "interrupted") parts.push(data.reason === "cancelled" ? "Cancelled" : "Stopped");
      if (this.operator) {
        parts.unshift(event.type);
        if (data.duration_ms !== undefined) parts.push(`${data.duration_ms} ms`);
        if (!Number.isNaN(cost)) parts.push(`$${usage.cost_usd}`);
      } else if (this.cost && cost > 0) {
        parts.push(`$${cost.toFixed(4)}`);
      }
      if (data.structured_output !== undefined && data.structured_output !== null) {
        const output = element("div", "structured");
        output.append(element("span", "who", "Structured output"), element("pre", "", pretty(data.structured_output)));
        run.root.insertBefore(output, run.status);
      }
      this.setStatus(run, parts.join(" · "), state);
      if (state === "failed") run.status.setAttribute("role", "alert");
      this.seq(run.status, event);
    }

    // --- people in the loop: a call that waits for a person's approval, the agent's question ------------------

    // `running`: how the run's status read before it waited, to read so again once nothing is pending.
    waitFor(run, text) {
      if (run.status.dataset.state !== "waiting") run.running = run.status.textContent;
      this.setStatus(run, text, "waiting");
    }

    stopWaiting(run) {
      if (run.status.dataset.state !== "waiting" || run.root.querySelector(".request[data-state='pending']")) return;
      this.setStatus(run, run.running || "Running…", "running");
    }

    // Under its tool call (a subagent's too), or last in its run when that call is not drawn.
    requestCard(run, kind, id, data, event) {
      const card = element("section", "request");
      card.dataset.kind = kind;
      card.dataset.state = "pending";
      card.dataset.id = id;
      card.setAttribute("aria-label", kind === "question" ? "The agent asks" : "The agent asks to use a tool");
      const tool = run.tools.get(data.tool_use_id);
      if (tool) tool.after(card);
      else run.root.insertBefore(card, run.status);
      this.requests.set(id, card);
      this.seq(card, event);
      return card;
    }

    approvalRequest(run, data, event) {
      const card = this.requestCard(run, "approval", data.approval_id, data, event);
      card.append(element("p", "title", data.title || `The agent wants to use ${data.tool}`));
      // The title quotes the description already; the reason says which rule asked.
      if (data.description && !String(data.title || "").includes(data.description)) {
        card.append(element("p", "description", data.description));
      }
      if (data.decision_reason) card.append(element("p", "reason quiet", data.decision_reason));
      const input = element("details", "input");
      input.open = true;
      const tool = data.display_name || data.tool || "the tool";
      input.append(element("summary", "", `Input of ${tool}`), element("pre", "", pretty(data.input)));
      card.append(input, this.deadline(data.expires_at, "decides"));
      this.waitFor(run, this.operator ? "Waiting for an approval…" : "Waiting for your approval…");
      this.onRequest({ kind: "approval", id: data.approval_id, data, card });
    }

    question(run, data, event) {
      const card = this.requestCard(run, "question", data.question_id, data, event);
      for (const item of Array.isArray(data.questions) ? data.questions : []) {
        const set = element("fieldset", "ask");
        set.dataset.question = item.question || "";
        set.dataset.multiple = item.multiSelect ? "true" : "false";
        const legend = element("legend");
        if (item.header && item.header !== item.question) legend.append(element("span", "chip", item.header), " ");
        legend.append(item.question || "");
        const choices = element("div", "choices");
        for (const option of Array.isArray(item.options) ? item.options : []) {
          // Drawn inert; a page that lets its viewer answer enables them.
          let choice;
          if (item.multiSelect) {
            choice = element("label", "choice");
            const box = element("input");
            box.type = "checkbox";
            box.value = option.label;
            box.disabled = true;
            choice.append(box, " ");
          } else {
            choice = element("button", "choice");
            choice.type = "button";
            choice.value = option.label;
            choice.disabled = true;
          }
          choice.dataset.label = option.label;
          choice.append(element("strong", "", option.label));
          if (option.description) choice.append(" ", element("span", "quiet", option.description));
          choices.append(choice);
        }
        set.append(legend, choices);
        card.append(set);
      }
      card.append(this.deadline(data.expires_at, "answers"));
      this.waitFor(run, this.operator ? "Waiting for an answer…" : "Waiting for your answer…");
      this.onRequest({ kind: "question", id: data.question_id, data, card });
    }

    deadline(expiresAt, verb) {
      const node = element("p", "deadline quiet");
      const at = new Date(expiresAt);
      if (!Number.isNaN(at.getTime())) {
        const today = at.toDateString() === new Date().toDateString();
        const when = today ? at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : at.toLocaleString();
        node.textContent = `Refused by itself if nobody ${verb} by ${when}.`;
      }
      return node;
    }

    // Who settled a request, in the viewer's words: operators see names, end users see "you" for themselves.
    who(decidedBy) {
      const { kind, name } = decidedBy || {};
      if (kind === "end_user") {
        if (name && name === this.me) return "you";
        return this.operator ? `end user ${name}` : name || "the user";
      }
      if (kind === "api_key") return this.operator ? `API key ${name}` : "the application";
      if (kind === "operator") return this.operator ? `operator ${name}` : "an operator";
      return "the platform";
    }

    // The card's controls go and its outcome is said; a second settling (a run's end, then its `cancelled`)
    // says the later one.
    closeRequest(card, state, text) {
      card.dataset.state = state;
      card.querySelectorAll(".control").forEach((control) => control.remove());
      card.querySelectorAll("button, input, textarea").forEach((control) => (control.disabled = true));
      card.querySelector(":scope > .deadline")?.remove();
      card.querySelectorAll(":scope > details.input").forEach((input) => (input.open = false)); // decided: folded
      let outcome = card.querySelector(":scope > .outcome");
      if (!outcome) {
        outcome = element("p", "outcome");
        outcome.setAttribute("role", "status");
        card.append(outcome);
      }
      outcome.textContent = text;
      return outcome;
    }

    approvalDecision(run, data, event) {
      const card = this.requests.get(data.approval_id);
      if (!card) return this.meta(run, `permission.decision #${event.seq}`, data); // its request is not drawn
      const by = this.who(data.decided_by);
      let text;
      if (data.decision === "allowed") {
        text = `Allowed by ${by}`;
        if (data.remember) text += `, and ${data.tool} for the rest of this conversation`;
        if (data.updated_input) text += ", with an edited input";
      } else if (data.decision === "denied") text = `Denied by ${by}`;
      else if (data.decision === "expired") text = "Nobody decided in time, so it was refused.";
      else text = "The run ended before anyone decided.";
      if (data.message) text += ` · “${data.message}”`;
      this.closeRequest(card, data.decision || "cancelled", text);
      if (data.updated_input) {
        const edited = element("details", "input edited");
        edited.append(element("summary", "", "Edited input"), element("pre", "", pretty(data.updated_input)));
        card.querySelector(":scope > .outcome").before(edited);
      }
      this.stopWaiting(run);
    }

    questionAnswered(run, data, event) {
      const card = this.requests.get(data.question_id);
      if (!card) return this.meta(run, `question.answered #${event.seq}`, data);
      const answers = data.answers && typeof data.answers === "object" ? data.answers : {};
      let text;
      if (data.status === "answered") text = `Answered by ${this.who(data.decided_by)}`;
      else if (data.status === "expired") text = "Nobody answered in time.";
      else text = "The run ended before anyone answered.";
      this.closeRequest(card, data.status || "cancelled", text);
      for (const set of card.querySelectorAll(":scope > fieldset.ask")) {
        const answer = answers[set.dataset.question];
        if (typeof answer !== "string") continue;
        // Several labels come back joined by ", " (how the platform stores a multiSelect answer).
        const chosen = set.dataset.multiple === "true" ? answer.split(", ") : [answer];
        for (const choice of set.querySelectorAll(".choice")) {
          const picked = chosen.includes(choice.dataset.label);
          choice.classList.toggle("chosen", picked);
          const box = choice.querySelector("input");
          if (box) box.checked = picked;
        }
        set.querySelector(":scope > .answer")?.remove();
        set.append(element("p", "answer", `Answer: ${answer}`));
      }
      this.stopWaiting(run);
    }
  }

  const DRAW = {
    // A message sent while another run was active waits behind it (`behind`, busy policy queue or interrupt).
    "run.queued": (view, run, data, event) => {
      view.userMessage(run, data, event);
      if (data.behind) run.root.dataset.behind = data.behind;
      const waits = data.disposition === "interrupting" ? "Next, once the current answer stops…" : "Waiting its turn…";
      view.setStatus(run, data.behind ? waits : "Queued…", "queued");
    },
    "run.started": (view, run, data, event) => {
      delete run.root.dataset.behind;
      const name = data.model_display_name || data.model || "";
      view.setStatus(run, name ? `Running · ${name}` : "Running…", "running");
      const agent = data.agent && data.agent.name ? `agent ${data.agent.name}@${data.agent.version}` : "";
      const where = [data.worker && `worker ${data.worker}`, data.sandbox && `sandbox ${data.sandbox}`];
      const verb = event.type === "run.resumed" ? "Resumed" : "Started";
      const words = [`${verb} #${event.seq}`, agent, `model ${name || "?"}`, ...where, data.warning];
      view.meta(run, words.filter(Boolean).join(" · "));
    },
    // A run that waited for a person without its worker goes on, on whichever worker took it up.
    "run.resumed": (view, run, data, event) => DRAW["run.started"](view, run, data, event),
    // Its worker shut down mid-turn: another continues it (`run.resumed`); what it writes then is a block of its own.
    "run.handed_back": (view, run, data, event) => {
      run.streams.clear();
      view.setStatus(run, "Moving to another worker…", "queued");
      view.meta(run, `Handed back #${event.seq} · worker ${data.worker || "?"} shut down`);
    },
    "run.waiting": (view, run, data, event) => {
      const what = data.kind === "question" ? "answer" : "approval";
      view.waitFor(run, view.operator ? `Waiting for an ${what} (no worker held)…` : `Waiting for your ${what}…`);
      view.meta(run, `Waiting #${event.seq}: ${data.kind} ${data[`${data.kind}_id`] || ""} · ${data.tool || ""}`);
    },
    "permission.request": (view, run, data, event) => view.approvalRequest(run, data, event),
    "permission.decision": (view, run, data, event) => view.approvalDecision(run, data, event),
    question: (view, run, data, event) => view.question(run, data, event),
    "question.answered": (view, run, data, event) => view.questionAnswered(run, data, event),
    // A message the user sent while the run worked, delivered into it as the agent's next input.
    "message.steered": (view, run, data, event) => {
      run.streams.clear(); // what the agent writes next answers it: a block of its own
      const user = view.userMessage(run, data, event);
      user.classList.add("steered");
      if (data.message_id) user.dataset.message = data.message_id;
    },
    "session.init": (view, run, data) => view.meta(run, `Session ${data.session_id || "?"} · ${data.model || ""}`),
    "message.delta": (view, run, data) => view.stream(run, data),
    message: (view, run, data, event) => view.block(run, data, event),
    "message.error": (view, run, data) => view.messageFailed(run, data),
    "tool.result": (view, run, data, event) => view.toolResult(run, data, event),
    "model.retry": (view, run, data) => {
      view.setStatus(run, `The model is busy; retrying (attempt ${data.attempt})…`, "running");
    },
    usage: (view, run, data, event) => {
      const tokens = `in ${data.input_tokens || 0} · out ${data.output_tokens || 0}`;
      const cache = `cache write ${(data.cache_write_5m_tokens || 0) + (data.cache_write_1h_tokens || 0)} · cache read ${data.cache_read_tokens || 0}`;
      const cost = data.cost_usd !== undefined ? ` · $${data.cost_usd}` : "";
      view.meta(run, `Usage #${event.seq}: ${tokens} · ${cache}${cost}`, undefined, data.parent_tool_use_id);
    },
    // The gauge of the chat page shows it to end users; operators read it, by category, in the transcript.
    "context.usage": (view, run, data, event) => {
      const usage = contextUsage(data);
      if (!usage) return view.meta(run, `context.usage #${event.seq}`, data);
      const categories = usage.categories.map((category) => `${category.name}: ${category.tokens} tokens`);
      view.meta(run, `Context #${event.seq}: ${describeContext(usage)}`, categories.join("\n") || undefined);
    },
    "conversation.titled": (view, run, data, event) => view.meta(run, `Titled #${event.seq}: “${data.title || ""}”`),
    "file.changed": (view, run, data, event) => view.meta(run, `File ${data.change} #${event.seq}: ${data.path}`),
    "file.presented": (view, run, data, event) => view.meta(run, `File presented #${event.seq}: ${data.path}`),
    // One connection of the run's sandbox through its egress proxy: where, and what it moved or why it was refused.
    egress: (view, run, data, event) => {
      const where = `${data.method || ""} ${data.host}:${data.port}`.trim();
      const moved = `${data.bytes_up || 0} B up · ${data.bytes_down || 0} B down`;
      const words = data.allowed ? `${where} · ${moved}${data.reason ? ` · cut: ${data.reason}` : ""}` : `${where} refused: ${data.reason || ""}`;
      view.meta(run, `Network #${event.seq}: ${words}`);
    },
  };

  return { ConversationView, TERMINAL, element, pretty, contextUsage, describeContext };
})();
