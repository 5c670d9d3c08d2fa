// The admin's live page: follows one conversation over its WebSocket, where staff may also steer it.
// Events are drawn by the renderer shared with the chat page (events.js), with the operators' detail.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("live-config").textContent);
  const $ = (id) => document.getElementById(id);
  const feed = $("feed");
  const text = $("text");
  const sendButton = $("send");
  const interruptButton = $("interrupt");

  let socket = null;
  let retryDelay = 1000;

  function nearBottom() {
    return feed.scrollHeight - feed.scrollTop - feed.clientHeight < 80;
  }

  let follow = true; // keep the newest in view unless the operator scrolled up to read
  feed.addEventListener("scroll", () => (follow = nearBottom()));

  const view = new ConversationEvents.ConversationView(feed, {
    operator: true,
    onChange: () => {
      if (follow) feed.scrollTop = feed.scrollHeight;
    },
    onEvent: (event, data) => {
      $("last-seq").textContent = String(view.lastSeq);
      if (event.type === "run.queued") setRunStatus("queued");
      else if (event.type === "run.waiting") setRunStatus("waiting");
      else if (event.type === "run.resumed") setRunStatus("running");
      else if (event.type === "run.started") {
        setRunStatus("running");
        if (data.offline_model === true) $("offline-badge").classList.remove("hidden");
        if (data.sandbox) $("unsandboxed-badge").classList.toggle("hidden", data.sandbox !== "unsandboxed");
      } else if (ConversationEvents.TERMINAL[event.type]) setRunStatus(ConversationEvents.TERMINAL[event.type]);
    },
  });

  function setBadge(node, label, state) {
    node.textContent = label;
    node.className = "badge " + (state || label);
  }

  function setRunStatus(status) {
    setBadge($("run-status"), status, status);
    interruptButton.disabled = !(socketOpen() && ["queued", "running", "waiting"].includes(status));
  }

  function socketOpen() {
    return socket !== null && socket.readyState === WebSocket.OPEN;
  }

  function renderFrame(frame) {
    if (typeof frame.seq === "number") {
      view.apply(frame);
    } else if (frame.type === "ack") {
      const run = frame.run || {};
      const runId = run.id || frame.run_id;
      view.note(`Server accepted ${frame.request || "request"}${runId ? ` · run ${runId}` : ""}`);
    } else if (frame.type === "error") {
      const error = frame.error || {};
      view.note(`Error ${error.code || ""}: ${error.message || ""}`, "meta frame-error");
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}${config.websocketPath}?after=${view.lastSeq}`;
    setBadge($("conn"), "connecting");
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      retryDelay = 1000;
      setBadge($("conn"), "open");
      sendButton.disabled = false;
      setRunStatus($("run-status").textContent);
    });
    socket.addEventListener("message", (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (frame && typeof frame === "object") renderFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      sendButton.disabled = true;
      interruptButton.disabled = true;
      if (event.code >= 4400 && event.code <= 4499) {
        // Refused, and told why in an error frame (shown above): trying again would not change it.
        setBadge($("conn"), "refused · reload to try again", "closed");
        return;
      }
      // A drop (or the server away) retries slower each time.
      setBadge($("conn"), `closed · retrying in ${Math.round(retryDelay / 1000)} s`, "closed");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    });
  }

  $("composer").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const message = text.value.trim();
    if (!message || !socketOpen()) return;
    socket.send(JSON.stringify({ type: "message", text: message }));
    text.value = "";
  });
  text.addEventListener("keydown", (key) => {
    if (key.key === "Enter" && (key.ctrlKey || key.metaKey)) {
      key.preventDefault();
      $("composer").requestSubmit();
    }
  });
  interruptButton.addEventListener("click", () => {
    if (socketOpen()) socket.send(JSON.stringify({ type: "interrupt" }));
  });

  connect();
})();
