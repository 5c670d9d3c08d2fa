// The chat page's controls on what the agent waits for (the cards conversations/events.js draws): Allow, Deny,
// Allow for this conversation, an optional message and an edited input on an approval; the options, or the
// user's own words, on a question. `send(request, body)` delivers the decision and settles with the server's
// answer; the card itself settles when its decision event arrives, whoever decided (another tab, the API,
// expiry), which removes these controls.
"use strict";

window.ChatRequests = (() => {
  const { element, pretty } = ConversationEvents;

  function button(text, className, onClick) {
    const node = element("button", className, text);
    node.type = "button";
    node.addEventListener("click", onClick);
    return node;
  }

  // What the card says when a decision did not go through (taken already, the connection lost): calmly,
  // in the card, with its controls back for another try.
  function problem(card, text) {
    let node = card.querySelector(":scope > .problem");
    if (!node) {
      node = element("p", "problem control");
      node.setAttribute("role", "status");
      card.append(node);
    }
    node.textContent = text;
    node.hidden = !text;
  }

  // Every control of a pending card: the page's and the options drawn with it.
  function controls(card) {
    return card.querySelectorAll(".control button, .control input, .control textarea, .choice, .choice input");
  }

  async function submit(request, body, send) {
    const { card } = request;
    if (card.dataset.state !== "pending" || card.dataset.sending) return;
    card.dataset.sending = "true";
    controls(card).forEach((control) => (control.disabled = true));
    problem(card, "");
    try {
      await send(request, body);
    } catch (error) {
      if (card.dataset.state === "pending") {
        problem(card, error.message);
        controls(card).forEach((control) => (control.disabled = false));
      }
    } finally {
      delete card.dataset.sending;
    }
  }

  // --- an approval: allow (once, or for the conversation), deny, or allow with an edited input ---------

  function approvalControls(request, send) {
    const { card, data } = request;
    const actions = element("div", "actions control");
    const message = element("textarea", "message");
    message.rows = 1;
    message.placeholder = "A message to the agent (optional)";
    message.setAttribute("aria-label", "A message to the agent with your decision (optional)");
    const decide = (body) => {
      const said = message.value.trim();
      submit(request, said ? { ...body, message: said } : body, send);
    };

    const editor = element("div", "editor");
    editor.hidden = true;
    const json = element("textarea", "json");
    json.rows = 6;
    json.spellcheck = false;
    json.setAttribute("aria-label", `The input of ${data.tool}, as JSON`);
    const allowEdited = button("Allow with this input", "allow", () => {
      let edited;
      try {
        edited = JSON.parse(json.value);
      } catch (error) {
        problem(card, `The input is not JSON: ${error.message}`);
        return;
      }
      if (!edited || typeof edited !== "object" || Array.isArray(edited)) {
        problem(card, "The input must be a JSON object, as the tool's input above is.");
        return;
      }
      decide({ decision: "allow", updated_input: edited });
    });
    editor.append(json, allowEdited);

    const edit = button("Edit input", "edit", () => {
      editor.hidden = !editor.hidden;
      edit.setAttribute("aria-expanded", String(!editor.hidden));
      if (!editor.hidden) {
        if (!json.value) json.value = pretty(data.input);
        json.focus();
      }
    });
    edit.setAttribute("aria-expanded", "false");
    const always = () => decide({ decision: "allow", remember: true });
    const remember = button("Allow for this conversation", "remember", always);
    remember.title = `Allow this call, and ${data.tool} without asking for the rest of this conversation`;
    const buttons = element("div", "buttons");
    buttons.append(
      button("Allow", "allow", () => decide({ decision: "allow" })),
      remember,
      button("Deny", "deny", () => decide({ decision: "deny" })),
      edit,
    );
    actions.append(message, buttons, editor);
    card.querySelector(":scope > .deadline").before(actions);
  }

  // --- a question: an option per click, several ticked (multiSelect), or the user's own words ---------

  function questionControls(request, send) {
    const { card } = request;
    const sets = Array.from(card.querySelectorAll(":scope > fieldset.ask"));
    // One question of one choice is answered by its click; otherwise the answers go together.
    const atOnce = sets.length === 1 && sets[0].dataset.multiple !== "true";
    const picked = new Map(); // question → the label clicked (single choice)

    function answers() {
      const found = {};
      for (const set of sets) {
        const question = set.dataset.question;
        const own = set.querySelector(".other").value.trim();
        let answer;
        if (set.dataset.multiple === "true") {
          const ticked = Array.from(set.querySelectorAll(".choice input:checked"), (box) => box.value);
          answer = own ? [...ticked, own] : ticked;
          if (!answer.length) answer = null;
        } else {
          answer = own || picked.get(question) || null;
        }
        if (answer === null) {
          problem(card, `Answer “${question}” first: pick an option, or write your own.`);
          return null;
        }
        found[question] = answer;
      }
      return found;
    }

    const answer = () => {
      const found = answers();
      if (found) submit(request, { answers: found }, send);
    };

    for (const set of sets) {
      for (const choice of set.querySelectorAll(".choice")) {
        const box = choice.querySelector("input");
        (box || choice).disabled = false;
        if (box) continue;
        choice.setAttribute("aria-pressed", "false");
        choice.addEventListener("click", () => {
          picked.set(set.dataset.question, choice.dataset.label);
          set.querySelectorAll(".choice").forEach((each) => each.setAttribute("aria-pressed", String(each === choice)));
          set.querySelector(".other").value = "";
          if (atOnce) answer();
        });
      }
      const other = element("input", "other control");
      other.type = "text";
      other.placeholder = "Other: your own answer";
      other.setAttribute("aria-label", `Your own answer to “${set.dataset.question}”`);
      other.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.isComposing) {
          event.preventDefault();
          answer();
        }
      });
      set.append(other);
    }
    const actions = element("div", "actions control");
    actions.append(button(atOnce ? "Send my answer" : "Send answers", "allow", answer));
    card.querySelector(":scope > .deadline").before(actions);
  }

  /** Add the controls of a pending request (ConversationView's onRequest). */
  function addControls(request, send) {
    if (request.kind === "approval") approvalControls(request, send);
    else questionControls(request, send);
  }

  return { addControls };
})();
