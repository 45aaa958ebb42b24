// Shared helpers of the back-office pages: formatting, the live stream with
// its own reconnection, and forms submitted without leaving the page.
// Text from runs is only ever written with textContent, never as HTML.

export const FINAL = new Set(["succeeded", "failed", "aborted", "timed_out", "lost"]);
export const ACTIVE = new Set(["queued", "running", "paused"]);

export function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
    if (seconds < 10) return `${Math.max(0, seconds).toFixed(1)} s`;
    let s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    let m = Math.floor(s / 60);
    s %= 60;
    if (m < 60) return `${m} min ${String(s).padStart(2, "0")} s`;
    const h = Math.floor(m / 60);
    m %= 60;
    return `${h} h ${String(m).padStart(2, "0")} min`;
}

export function formatBytes(value) {
    if (value === null || value === undefined) return "–";
    let size = Number(value);
    for (const unit of ["B", "KB", "MB", "GB"]) {
        if (size < 1024 || unit === "GB") {
            return unit === "B" ? `${size.toFixed(0)} ${unit}` : `${size.toFixed(1)} ${unit}`;
        }
        size /= 1024;
    }
    return "–";
}

export function formatCpu(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? `${value.toFixed(1)}%` : `${Math.round(value)}%`;
}

export function formatTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function statusLabel(status) {
    return status ? status.replace("_", " ") : "never run";
}

/** Seconds a run has been going (or went), from its JSON or data-* times. */
export function elapsed(startedIso, finishedIso, now = Date.now()) {
    if (!startedIso) return null;
    const end = finishedIso ? Date.parse(finishedIso) : now;
    return Math.max(0, (end - Date.parse(startedIso)) / 1000);
}

export function progressFraction(progress) {
    if (!progress || typeof progress !== "object") return null;
    let value = progress.fraction;
    if (typeof value !== "number") {
        const { current, total } = progress;
        if (typeof current === "number" && typeof total === "number" && total > 0) {
            value = current / total;
        }
    }
    return typeof value === "number" ? Math.min(1, Math.max(0, value)) : null;
}

export function progressText(progress) {
    if (!progress || typeof progress !== "object") return "";
    const parts = [];
    const { current, total, fraction, message } = progress;
    if (typeof current === "number" && typeof total === "number") {
        parts.push(`${current} / ${total}`);
    } else if (typeof fraction === "number") {
        parts.push(`${Math.round(fraction * 100)}%`);
    }
    if (message) parts.push(String(message));
    return parts.join(" · ");
}

/** Show a progress value on a <progress> (indeterminate when unknown). */
export function setProgress(bar, progress) {
    if (!bar) return;
    const value = progressFraction(progress);
    if (value === null) bar.removeAttribute("value");
    else bar.value = value;
}

export function setStatusBadge(badge, status) {
    if (!badge) return;
    badge.className = `tr-status tr-status--${status || "none"}`;
    badge.textContent = statusLabel(status);
}

export function setText(el, text) {
    if (el && el.textContent !== text) el.textContent = text;
}

/**
 * What the two streams below share: start and stop, the state reported to
 * `onState`, and reconnecting with exponential backoff (1 s doubling to
 * 30 s) unless `shouldReconnect()` says the stream has nothing more to give.
 * A subclass implements `connect()` and `close()`, and calls `opened_()`.
 */
class ReconnectingStream {
    constructor({ url, handlers, onState, onOpen, shouldReconnect }) {
        this.url = url;
        this.handlers = handlers;
        this.onState = onState || (() => {});
        this.onOpen = onOpen || (() => {});
        this.shouldReconnect = shouldReconnect || (async () => true);
        this.delay = 1000;
        this.timer = null;
        this.stopped = false;
        this.opened = 0;
    }

    start() {
        this.stopped = false;
        this.connect();
    }

    stop(state = "ended") {
        this.stopped = true;
        clearTimeout(this.timer);
        this.close();
        this.onState(state);
    }

    opened_() {
        this.delay = 1000;
        this.opened += 1;
        this.onState("live");
        this.onOpen(this.opened);
    }

    async scheduleRetry() {
        let again = true;
        try {
            again = await this.shouldReconnect();
        } catch {
            again = true; // the server is unreachable: keep trying
        }
        if (this.stopped) return;
        if (!again) {
            this.stop();
            return;
        }
        const wait = this.delay;
        this.delay = Math.min(this.delay * 2, 30000);
        this.onState("disconnected", Math.round(wait / 1000));
        this.timer = setTimeout(() => this.connect(), wait);
    }
}

/**
 * An EventSource that keeps itself connected.
 *
 * The browser retries on its own after a network error, but an HTTP error
 * (or a server that is down at the moment of the retry) closes an
 * EventSource for good. Then we open a new one ourselves, with exponential
 * backoff, from `url()` (so the caller can resume after its last event).
 * `onState` gets "connecting", "live", "reconnecting" or "disconnected"
 * (with the seconds until the next attempt), and finally "ended".
 */
export class LiveStream extends ReconnectingStream {
    constructor(options) {
        super(options);
        this.source = null;
    }

    close() {
        if (this.source) this.source.close();
        this.source = null;
    }

    connect() {
        if (this.stopped) return;
        this.onState(this.opened ? "reconnecting" : "connecting");
        const source = new EventSource(this.url());
        this.source = source;
        for (const [name, handler] of Object.entries(this.handlers)) {
            source.addEventListener(name, (event) => {
                if (this.source === source) handler(event);
            });
        }
        source.addEventListener("open", () => {
            if (this.source === source) this.opened_();
        });
        source.addEventListener("error", () => {
            if (this.source !== source || this.stopped) return;
            if (source.readyState === EventSource.CONNECTING) {
                // The browser retries by itself, with Last-Event-ID.
                this.onState("reconnecting");
                return;
            }
            source.close();
            this.source = null;
            this.scheduleRetry();
        });
    }
}

/**
 * The same as LiveStream, reading the stream with fetch() instead of
 * EventSource, for streams that can carry thousands of events a second.
 *
 * EventSource dispatches one DOM event per SSE event, which costs tens of
 * microseconds each in Chromium (more under DevTools): 10,000 log lines a
 * second would keep the main thread busy. Here each network chunk is parsed
 * in one go (a few microseconds per event) and the HTTP status is known:
 * 204 means the run has ended, 401/403 that the session is gone.
 */
// Events handled in one go before looking at the clock, and the longest a
// run of them may keep the main thread (a long task is over 50 ms).
const YIELD_EVERY = 64;
const SLICE_MS = 8;

export class FetchEventStream extends ReconnectingStream {
    constructor(options) {
        super(options);
        this.controller = null;
    }

    close() {
        if (this.controller) this.controller.abort();
        this.controller = null;
    }

    async connect() {
        if (this.stopped) return;
        this.onState(this.opened ? "reconnecting" : "connecting");
        const controller = new AbortController();
        this.controller = controller;
        try {
            const response = await fetch(this.url(), {
                headers: { Accept: "text/event-stream" },
                credentials: "same-origin",
                cache: "no-store",
                signal: controller.signal,
            });
            if (response.status === 204) {
                // Nothing more will come (the run has ended).
                this.stop("ended");
                return;
            }
            if (response.status === 401 || response.status === 403) {
                this.stop("signed-out");
                return;
            }
            if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
            this.opened_();
            await this.read(response.body, controller);
        } catch (error) {
            if (controller.signal.aborted || this.stopped) return;
        }
        if (this.controller === controller && !this.stopped) {
            this.controller = null;
            this.scheduleRetry();
        }
    }

    async read(body, controller) {
        const reader = body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let type = "";
        let data = [];
        let id = null;
        for (;;) {
            const { value, done } = await reader.read();
            if (done || controller.signal.aborted) return;
            buffer += value;
            let start = 0;
            let sliceStart = performance.now();
            let events = 0;
            for (let end = buffer.indexOf("\n"); end !== -1; end = buffer.indexOf("\n", start)) {
                let line = buffer.slice(start, end);
                start = end + 1;
                if (line.endsWith("\r")) line = line.slice(0, -1);
                if (line === "") {
                    if (data.length) {
                        const handler = this.handlers[type || "message"];
                        const event = { data: data.join("\n"), lastEventId: id ?? "" };
                        if (handler) handler(event);
                        if (this.stopped || controller.signal.aborted) return;
                        events += 1;
                    }
                    type = "";
                    data = [];
                    id = null;
                    if (events >= YIELD_EVERY && performance.now() - sliceStart > SLICE_MS) {
                        // A chunk after a stall can hold tens of thousands of
                        // events: let the page paint and answer between slices.
                        buffer = buffer.slice(start);
                        start = 0;
                        await new Promise((resolve) => setTimeout(resolve, 0));
                        if (this.stopped || controller.signal.aborted) return;
                        sliceStart = performance.now();
                        events = 0;
                    }
                    continue;
                }
                if (line.charCodeAt(0) === 58) continue; // ":" a comment (keepalive)
                const colon = line.indexOf(":");
                const field = colon === -1 ? line : line.slice(0, colon);
                let text = colon === -1 ? "" : line.slice(colon + 1);
                if (text.charCodeAt(0) === 32) text = text.slice(1);
                if (field === "data") data.push(text);
                else if (field === "event") type = text;
                else if (field === "id") id = text;
            }
            buffer = buffer.slice(start);
        }
    }
}

const STATE_TEXT = {
    connecting: "connecting…",
    live: "live",
    reconnecting: "reconnecting…",
    disconnected: "disconnected",
    ended: "finished",
    "signed-out": "signed out — reload the page to sign in",
};

/** Reflect a LiveStream's state in a `[data-connection]` element. */
export function showConnection(el, state, seconds) {
    if (!el) return;
    el.dataset.state = state;
    let text = STATE_TEXT[state] || state;
    if (state === "disconnected" && seconds) text = `disconnected — retrying in ${seconds} s`;
    el.textContent = text;
}

function csrfToken(form) {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
}

/** Flash a message in the admin's message list at the top of the page. */
export function flash(text, level = "error") {
    let list = document.querySelector("ul.messagelist");
    if (!list) {
        list = document.createElement("ul");
        list.className = "messagelist";
        const main = document.querySelector("#content-start") || document.body;
        main.prepend(list);
    }
    const item = document.createElement("li");
    item.className = level;
    item.textContent = text;
    list.append(item);
    setTimeout(() => item.remove(), 8000);
}

/**
 * Submit `form[data-control]` / `[data-input-form]` forms with fetch, so the
 * page (and its stream) stays; `data-confirm` asks first. Without JS the
 * same forms post and redirect back.
 */
export function enhanceForms(root, { onSuccess } = {}) {
    root.addEventListener("submit", async (event) => {
        const form = event.target;
        if (!(form instanceof HTMLFormElement)) return;
        if (!form.matches("[data-control], [data-input-form], [data-confirm]")) return;
        if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
            event.preventDefault();
            return;
        }
        if (!form.matches("[data-control], [data-input-form]")) return;
        event.preventDefault();
        const buttons = form.querySelectorAll("button");
        buttons.forEach((b) => (b.disabled = true));
        try {
            const response = await fetch(form.action, {
                method: "POST",
                body: new FormData(form),
                headers: { Accept: "application/json", "X-CSRFToken": csrfToken(form) },
                credentials: "same-origin",
            });
            if (!response.ok) {
                let message = `The request failed (${response.status}).`;
                try {
                    const body = await response.json();
                    message = body.error?.message || message;
                } catch {
                    /* not JSON */
                }
                flash(message);
            } else if (onSuccess) {
                onSuccess(form);
            }
        } catch {
            flash("The server could not be reached.");
        } finally {
            buttons.forEach((b) => (b.disabled = false));
        }
    });
}

/** Ask before a start/abort form posts normally (no fetch). */
export function confirmForms(root) {
    root.addEventListener("submit", (event) => {
        const form = event.target;
        if (form instanceof HTMLFormElement && form.dataset.confirm) {
            if (!window.confirm(form.dataset.confirm)) event.preventDefault();
        }
    });
}

export async function fetchJson(url) {
    const response = await fetch(url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
}
