// The dashboard: ONE EventSource on the dashboard feed drives every row.
// The server renders the page (and a <template> for a run row); this module
// only applies `run` events (Run JSON) to it.
import {
    ACTIVE,
    LiveStream,
    elapsed,
    enhanceForms,
    fetchJson,
    formatBytes,
    formatCpu,
    formatSeconds,
    progressText,
    setProgress,
    setStatusBadge,
    setText,
    showConnection,
} from "./common.js";

const root = document.getElementById("dashboard");
const rowsBody = root.querySelector("[data-running-rows]");
const emptyNote = root.querySelector("[data-running-empty]");
const countBadge = root.querySelector("[data-running-count]");
const rowTemplate = document.getElementById("run-row-template");
const connection = document.querySelector("[data-connection]");
const PLACEHOLDER = "987654321";

// Active runs we know of: id -> Run JSON (or a stub from the rendered rows).
const active = new Map();
for (const row of rowsBody.querySelectorAll("tr[data-run-id]")) {
    active.set(Number(row.dataset.runId), {
        id: Number(row.dataset.runId),
        task: row.dataset.task,
        status: row.dataset.status,
    });
}

function runPageUrl(id) {
    return root.dataset.runPageTemplate.replace(PLACEHOLDER, String(id));
}

function controlUrl(id, action) {
    return root.dataset.controlTemplate
        .replace(PLACEHOLDER, String(id))
        .replace(/pause\/$/, `${action}/`);
}

function taskRow(name) {
    return root.querySelector(`tr.tr-task[data-task="${CSS.escape(name)}"]`);
}

function field(scope, name) {
    return scope.querySelector(`[data-field="${name}"]`);
}

function newRunRow(run) {
    const row = rowTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.runId = String(run.id);
    row.dataset.task = run.task;
    field(row, "link").href = runPageUrl(run.id);
    setText(field(row, "id"), String(run.id));
    const title = taskRow(run.task)?.querySelector(".tr-task-title");
    setText(field(row, "task"), title ? title.textContent : run.task);
    for (const form of row.querySelectorAll("form[data-control]")) {
        form.action = controlUrl(run.id, form.dataset.control);
        const next = form.querySelector("input[name=next]");
        if (next) next.value = location.pathname;
    }
    // Newest last, as the server orders them.
    const after = [...rowsBody.children].find((r) => Number(r.dataset.runId) > run.id);
    rowsBody.insertBefore(row, after || null);
    return row;
}

function updateRunRow(row, run) {
    row.dataset.status = run.status;
    row.dataset.started = run.started_at || "";
    row.dataset.finished = run.finished_at || "";
    setStatusBadge(field(row, "status"), run.status);
    setProgress(field(row, "progress"), run.progress);
    setText(field(row, "progress-text"), progressText(run.progress));
    setText(field(row, "cpu"), formatCpu(run.cpu_percent));
    setText(field(row, "memory"), formatBytes(run.memory_bytes));
    setText(field(row, "by"), run.requested_by || "–");
    tickRow(row);
}

function tickRow(row) {
    const seconds = elapsed(row.dataset.started, row.dataset.finished);
    setText(field(row, "elapsed"), formatSeconds(seconds));
}

function updateTaskRow(name, finished) {
    const row = taskRow(name);
    if (!row) return;
    const runs = [...active.values()].filter((r) => r.task === name).sort((a, b) => a.id - b.id);
    row.dataset.active = String(runs.length);
    const state = field(row, "state");
    const more = field(state, "more");
    const current = runs[runs.length - 1];
    setStatusBadge(field(state, "status"), current ? current.status : null);
    if (!current) setStatusBadge(field(state, "status"), "idle");
    more.hidden = runs.length < 2;
    setText(more, runs.length > 1 ? `+${runs.length - 1}` : "");
    const link = field(row, "current");
    link.hidden = !current;
    if (current) {
        link.href = runPageUrl(current.id);
        link.dataset.status = current.status;
        setProgress(field(link, "progress"), current.progress);
        setText(field(link, "progress-text"), `#${current.id} ${progressText(current.progress)}`);
    }
    if (finished) {
        const last = field(row, "last");
        const lastLink = field(last, "last-link");
        lastLink.hidden = false;
        lastLink.href = runPageUrl(finished.id);
        setStatusBadge(field(lastLink, "status"), finished.status);
        setText(field(last, "last-when"), "just now");
        setText(
            field(last, "last-duration"),
            formatSeconds(elapsed(finished.started_at, finished.finished_at)),
        );
        field(last, "never").hidden = true;
        // The newest file the run kept, one click away.
        const artifact = field(last, "last-artifact");
        const newest = (finished.artifacts || []).at(-1);
        artifact.hidden = !newest;
        if (newest) artifact.href = newest.url;
        setText(artifact, newest ? newest.name : "");
        const result = field(last, "last-result");
        const hasResult = finished.result !== null && finished.result !== undefined;
        result.hidden = !hasResult;
        let text = hasResult ? JSON.stringify(finished.result) : "";
        if (text.length > 70) text = `${text.slice(0, 69)}…`;
        setText(result, text);
    }
}

function refreshCount() {
    setText(countBadge, String(active.size));
    emptyNote.hidden = active.size > 0;
}

function applyRun(run) {
    if (!run || typeof run.id !== "number") return;
    let row = rowsBody.querySelector(`tr[data-run-id="${run.id}"]`);
    if (ACTIVE.has(run.status)) {
        active.set(run.id, run);
        if (!row) row = newRunRow(run);
        updateRunRow(row, run);
        updateTaskRow(run.task, null);
    } else {
        active.delete(run.id);
        if (row) row.remove();
        updateTaskRow(run.task, run);
    }
    refreshCount();
}

const stream = new LiveStream({
    url: () => root.dataset.feedUrl,
    handlers: {
        run: (event) => applyRun(JSON.parse(event.data)),
    },
    onState: (state, seconds) => showConnection(connection, state, seconds),
    onOpen: async (count) => {
        if (count < 2) return;
        // Back after a drop: the feed resends active runs; runs that ended
        // meanwhile are not in it, so ask about the ones still shown.
        for (const id of [...active.keys()]) {
            try {
                applyRun(await fetchJson(`${root.dataset.apiRunsUrl}${id}/`));
            } catch {
                /* next reconnect will try again */
            }
        }
    },
});
stream.start();

enhanceForms(root);

setInterval(() => {
    for (const row of rowsBody.querySelectorAll("tr[data-run-id]")) {
        if (row.dataset.status === "running") tickRow(row);
    }
}, 1000);

// A parameter form closes when another opens or on a click elsewhere.
document.addEventListener("click", (event) => {
    for (const details of root.querySelectorAll("details.tr-start-details[open]")) {
        if (!details.contains(event.target)) details.open = false;
    }
});
