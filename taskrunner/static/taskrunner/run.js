// The run page: one EventSource on the run's stream feeds the log viewer and
// keeps the rendered facts (status, progress, times, result) up to date.
import {
    FINAL,
    FetchEventStream,
    elapsed,
    enhanceForms,
    fetchJson,
    formatBytes,
    formatCpu,
    formatSeconds,
    formatTime,
    progressText,
    setProgress,
    setStatusBadge,
    setText,
    showConnection,
} from "./common.js";
import { LogViewer, lineFromEvent } from "./logviewer.js";

const root = document.getElementById("run-page");
const connection = root.querySelector("[data-connection]");
const field = (name) => root.querySelector(`[data-field="${name}"]`);
const POLL_MS = 2000;

const viewer = new LogViewer({
    view: root.querySelector("[data-log-view]"),
    spacer: root.querySelector("[data-log-spacer]"),
    rows: root.querySelector("[data-log-rows]"),
    olderButton: root.querySelector("[data-load-older]"),
    info: root.querySelector("[data-log-info]"),
    follow: root.querySelector("[data-follow]"),
    eventListUrl: root.dataset.eventListUrl,
});
// For tests and the curious: the viewer behind the page.
root.logViewer = viewer;

let status = root.dataset.status;
let lastProgress = null;
let progressQueued = false;

function setStatus(value) {
    status = value;
    root.dataset.status = value;
    setStatusBadge(root.querySelector(".tr-run-state [data-field=status]"), value);
    for (const el of root.querySelectorAll("[data-controls], [data-input-form]")) {
        el.dataset.status = value;
    }
}

function applyProgress(progress) {
    // Progress can come many times a frame: show only the latest.
    lastProgress = progress;
    if (progressQueued) return;
    progressQueued = true;
    requestAnimationFrame(() => {
        progressQueued = false;
        field("progress-block").hidden = !lastProgress;
        setProgress(field("progress"), lastProgress);
        setText(field("progress-text"), progressText(lastProgress));
    });
}

function applyUsage(run) {
    setText(field("cpu"), formatCpu(run.cpu_percent));
    setText(field("memory"), formatBytes(run.memory_bytes));
    setText(field("host"), run.host ? run.host : "–");
    setText(field("pid"), run.pid === null || run.pid === undefined ? "–" : String(run.pid));
}

// The seq of the newest state applied. A fetched snapshot can be older than
// what the stream already delivered (a GET sent before the worker acted and
// answered after its status event): such a snapshot must not undo it.
let appliedSeq = 0;

function applyRun(run, seq = run.last_seq ?? 0) {
    if (seq < appliedSeq) {
        applyUsage(run);
        return;
    }
    appliedSeq = seq;
    setStatus(run.status);
    root.dataset.started = run.started_at || "";
    root.dataset.finished = run.finished_at || "";
    setText(field("started"), run.started_at ? formatTime(run.started_at) : "–");
    setText(field("finished"), run.finished_at ? formatTime(run.finished_at) : "–");
    setText(field("by"), run.requested_by || "–");
    setText(field("exit-code"), run.exit_code === null ? "–" : String(run.exit_code));
    tick();
    applyUsage(run);
    if (run.progress) applyProgress(run.progress);
    field("result-block").hidden = run.result === null || run.result === undefined;
    if (run.result !== null && run.result !== undefined) {
        setText(field("result"), JSON.stringify(run.result, null, 2));
    }
    field("error-block").hidden = !run.error;
    setText(field("error"), run.error || "");
    applyActions(run.actions || []);
    applyArtifacts(run.artifacts || []);
}

// The files the run kept: rebuilt from the Run JSON (a status event, or the
// refresh a `message` event named "artifact" asks for), never from what a
// child could print.
function applyArtifacts(artifacts) {
    const body = root.querySelector("[data-artifacts]");
    if (!body) return;
    const shown = [...body.children].map((tr) => tr.dataset.artifact).join("\n");
    if (shown === artifacts.map((a) => a.name).join("\n")) return;
    const rows = artifacts.map((artifact) => {
        const tr = document.createElement("tr");
        tr.dataset.artifact = artifact.name;
        const name = document.createElement("a");
        name.href = artifact.url;
        name.download = "";
        name.textContent = artifact.name;
        const size = document.createElement("td");
        size.className = "tr-num";
        size.textContent = formatBytes(artifact.size);
        const sha = document.createElement("code");
        sha.className = "tr-sha256";
        sha.textContent = artifact.sha256;
        const button = document.createElement("a");
        button.className = "tr-button tr-button--small";
        button.href = artifact.url;
        button.download = "";
        button.textContent = "Download";
        const cells = [name, size, sha, button].map((content) => {
            if (content.tagName === "TD") return content;
            const td = document.createElement("td");
            td.append(content);
            return td;
        });
        tr.append(...cells);
        return tr;
    });
    body.replaceChildren(...rows);
    root.querySelector("[data-artifacts-table]").hidden = artifacts.length === 0;
    root.querySelector("[data-artifacts-empty]").hidden = artifacts.length > 0;
}

function applyActions(actions) {
    const body = root.querySelector("[data-actions]");
    if (!body || body.children.length === actions.length) return;
    const rows = actions.map((action) => {
        const tr = document.createElement("tr");
        for (const text of [action.action, action.by || "–", action.via, formatTime(action.at)]) {
            const td = document.createElement("td");
            td.textContent = text;
            tr.append(td);
        }
        return tr;
    });
    body.replaceChildren(...rows);
}

function tick() {
    setText(field("duration"), formatSeconds(elapsed(root.dataset.started, root.dataset.finished)));
}

function onEvent(kind) {
    return (event) => {
        const data = JSON.parse(event.data);
        const seq = Number(event.lastEventId || data.seq);
        if (!viewer.seen(seq)) return; // a repeat across a reconnect
        if (kind === "status") applyRun(data, seq);
        else if (kind === "progress") applyProgress(data);
        else if (kind === "message" && data.name === "artifact") refresh();
        const line = lineFromEvent(kind, data, seq);
        if (line) viewer.push(line);
    };
}

function streamUrl() {
    const url = new URL(root.dataset.eventsUrl, location.href);
    if (viewer.highestSeq > 0) url.searchParams.set("after", String(viewer.highestSeq));
    else url.searchParams.set("tail", root.dataset.tail);
    return url.toString();
}

const stream = new FetchEventStream({
    url: streamUrl,
    handlers: {
        log: onEvent("log"),
        progress: onEvent("progress"),
        status: onEvent("status"),
        message: onEvent("message"),
        end: () => {
            stream.stop("ended");
            refresh();
        },
    },
    onState: (state, seconds) => showConnection(connection, state, seconds),
    // Cut off or refused: is there more to get?
    shouldReconnect: async () => {
        const run = await fetchJson(root.dataset.apiUrl);
        applyRun(run);
        return !(FINAL.has(run.status) && (run.last_seq ?? 0) <= viewer.highestSeq);
    },
});
stream.start();

async function refresh() {
    try {
        applyRun(await fetchJson(root.dataset.apiUrl));
    } catch {
        /* the stream will tell */
    }
}

// CPU and memory are sampled by the worker without an event: poll them
// (the polling endpoint of the API) while the run has processes.
setInterval(async () => {
    if (status !== "running" && status !== "paused") return;
    if (document.hidden) return;
    try {
        applyUsage(await fetchJson(root.dataset.apiUrl));
    } catch {
        /* shown by the stream state */
    }
}, POLL_MS);

setInterval(() => {
    if (status === "running" || status === "paused") tick();
}, 1000);

enhanceForms(root, {
    onSuccess: (form) => {
        if (form.matches("[data-input-form]")) {
            const input = form.querySelector("[data-input]");
            input.value = "";
            input.focus();
        }
        refresh();
    },
});

// Search within the log.
const searchForm = root.querySelector("[data-log-search]");
const searchInput = root.querySelector("[data-search-input]");
const searchCount = root.querySelector("[data-search-count]");
function runSearch(backwards) {
    const [n, total] = viewer.search(searchInput.value, backwards);
    if (!searchInput.value.trim()) setText(searchCount, "");
    else setText(searchCount, total ? `${n} / ${total}` : "no match");
}
searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch(false);
});
root.querySelector("[data-search-prev]").addEventListener("click", () => runSearch(true));
searchInput.addEventListener("search", () => {
    if (!searchInput.value) runSearch(false);
});
