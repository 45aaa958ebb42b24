// The timeline: the server draws the Gantt chart; this module keeps it live
// from the ONE dashboard feed (new runs, status changes, running bars growing)
// and slides the window with the clock.
//
// After the now line come the coming runs: schedules' due times and runs
// queued for later. The server computes them (taskrunner/coming.py; no cron
// here) and this module reloads them from data-coming-url when they may have
// changed: a new run on the feed (a schedule fired, a run was queued), a
// drawn time that has passed (fired, skipped or overdue: the server says
// which), a reconnected feed, and every few minutes for the times entering
// the far edge. A run that leaves "queued" loses its mark at once.
import { LiveStream, showConnection, statusLabel } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const root = document.getElementById("timeline");
const svg = root.querySelector("[data-gantt]");
const ticks = svg.querySelector("[data-ticks]");
const connection = document.querySelector("[data-connection]");
const comingNote = root.querySelector("[data-coming-note]");
const span = Number(root.dataset.span) * 1000;
const ahead = Number(root.dataset.ahead || 0) * 1000;
const total = span + ahead;
const left = Number(root.dataset.labelWidth);
const right = Number(root.dataset.plotRight);
const barHeight = root.dataset.barHeight || "18";
const markWidth = Number(root.dataset.markWidth || 6);
const PLACEHOLDER = "987654321";
const TICKS = 8;
// A worker fires a due time within a second or so; past this, ask the server.
const PASSED_GRACE_MS = 3000;
// At most one reload a while for passed times (a browser clock ahead of the
// server's would otherwise ask on every layout).
const PASSED_REFRESH_MS = 10_000;
const REFRESH_MS = Math.min(300_000, Math.max(30_000, ahead / 24));
const REFRESH_GAP_MS = 1000;

function x(ms, start) {
    const f = Math.min(1, Math.max(0, (ms - start) / total));
    return left + f * (right - left);
}

function formatTick(date) {
    const pad = (n) => String(n).padStart(2, "0");
    const time = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    if (total <= 24 * 3600 * 1000) return time;
    const month = date.toLocaleString(undefined, { month: "short" });
    return `${pad(date.getDate())} ${month} ${time}`;
}

function drawTicks(start) {
    const top = Number(svg.querySelector("[data-now-line]").getAttribute("y1"));
    const bottom = Number(svg.querySelector("[data-now-line]").getAttribute("y2"));
    const nodes = [];
    for (let i = 0; i <= TICKS; i++) {
        const ms = start + (total * i) / TICKS;
        const line = document.createElementNS(SVG, "line");
        const px = String(x(ms, start));
        line.setAttribute("x1", px);
        line.setAttribute("x2", px);
        line.setAttribute("y1", String(top));
        line.setAttribute("y2", String(bottom));
        line.setAttribute("class", "tr-grid");
        const text = document.createElementNS(SVG, "text");
        text.setAttribute("x", px);
        text.setAttribute("y", String(top - 4));
        text.setAttribute("class", "tr-axis-label");
        text.setAttribute("text-anchor", "middle");
        text.textContent = formatTick(new Date(ms));
        nodes.push(line, text);
    }
    ticks.replaceChildren(...nodes);
}

// A bar's place on the time axis now; a bar that ended before the window is removed.
function place(bar, now) {
    const start = now - span;
    const begin = Date.parse(bar.dataset.start);
    const end = bar.dataset.end ? Date.parse(bar.dataset.end) : now;
    if (end < start) {
        bar.remove();
        return;
    }
    const x0 = x(begin, start);
    const x1 = x(end, start);
    const rect = bar.querySelector("rect");
    rect.setAttribute("x", x0.toFixed(2));
    rect.setAttribute("width", Math.max(2, x1 - x0).toFixed(2));
}

// A coming run's mark: at its time, or at the now line once that has passed.
function placeMark(mark, now) {
    const at = Date.parse(mark.dataset.at);
    const px = x(Math.max(at, now), now - span) - markWidth / 2;
    mark.querySelector("rect").setAttribute("x", px.toFixed(2));
}

function layout() {
    const now = Date.now();
    for (const bar of svg.querySelectorAll(".tr-gantt-bar")) place(bar, now);
    let passed = false;
    for (const mark of svg.querySelectorAll(".tr-coming")) {
        placeMark(mark, now);
        if (mark.dataset.overdue !== "true" && Date.parse(mark.dataset.at) + PASSED_GRACE_MS < now) {
            passed = true;
        }
    }
    drawTicks(now - span);
    if (passed && now - coming.loadedAt > PASSED_REFRESH_MS) coming.refresh();
}

function markFor(data) {
    const row = svg.querySelector(`.tr-gantt-row[data-task="${CSS.escape(data.task)}"]`);
    if (!row) return null;
    const kind = data.kind === "run" ? "run" : "schedule";
    const mark = document.createElementNS(SVG, "a");
    mark.setAttribute("class", `tr-coming tr-coming--${kind}`);
    mark.setAttribute("href", data.url);
    mark.dataset.kind = kind;
    mark.dataset.id = String(data.id);
    mark.dataset.at = data.at;
    mark.dataset.overdue = data.overdue ? "true" : "false";
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("y", row.dataset.y);
    rect.setAttribute("width", String(markWidth));
    rect.setAttribute("height", barHeight);
    rect.setAttribute("rx", "2");
    const title = document.createElementNS(SVG, "title");
    title.textContent = data.title;
    rect.append(title);
    mark.append(rect);
    row.append(mark);
    return mark;
}

/** The coming runs, reloaded from the server: one request at a time, the last ask wins. */
const coming = {
    loading: false,
    again: false,
    loadedAt: Date.now(),

    async refresh() {
        if (this.loading) {
            this.again = true;
            return;
        }
        this.loading = true;
        this.loadedAt = Date.now();
        try {
            const response = await fetch(root.dataset.comingUrl, {
                headers: { Accept: "application/json" },
                credentials: "same-origin",
                cache: "no-store",
            });
            // A login page (the session ended) or an error: keep what is drawn.
            const type = response.headers.get("content-type") || "";
            if (response.ok && type.includes("application/json")) this.draw(await response.json());
        } catch {
            // The server is unreachable: the feed shows it; the next ask redraws.
        } finally {
            this.loading = false;
            if (this.again) {
                this.again = false;
                setTimeout(() => this.refresh(), REFRESH_GAP_MS);
            }
        }
    },

    draw(body) {
        for (const old of svg.querySelectorAll(".tr-coming")) old.remove();
        const now = Date.now();
        for (const data of body.marks) {
            const mark = markFor(data);
            if (mark) placeMark(mark, now);
        }
        if (comingNote) comingNote.hidden = !body.capped;
        this.loadedAt = now;
    },
};

function barFor(run) {
    let bar = svg.querySelector(`.tr-gantt-bar[data-run-id="${run.id}"]`);
    if (bar) return bar;
    const row = svg.querySelector(`.tr-gantt-row[data-task="${CSS.escape(run.task)}"]`);
    if (!row) return null;
    bar = document.createElementNS(SVG, "a");
    bar.setAttribute("class", "tr-gantt-bar");
    bar.setAttribute("href", root.dataset.runPageTemplate.replace(PLACEHOLDER, String(run.id)));
    bar.dataset.runId = String(run.id);
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("y", row.dataset.y);
    rect.setAttribute("height", barHeight);
    rect.setAttribute("rx", "3");
    rect.append(document.createElementNS(SVG, "title"));
    bar.append(rect);
    // Below the coming marks of the row, which sit at and after now.
    row.insertBefore(bar, row.querySelector(".tr-coming"));
    return bar;
}

// Runs seen on the feed without a bar on the page (a task added since): asked about once.
const rowless = new Set();

function applyRun(run) {
    const known =
        rowless.has(run.id) || svg.querySelector(`.tr-gantt-bar[data-run-id="${run.id}"]`) !== null;
    if (run.status !== "queued") {
        for (const mark of svg.querySelectorAll(`.tr-coming[data-kind="run"][data-id="${run.id}"]`)) {
            mark.remove();
        }
    }
    // A new run: a schedule fired (its next times moved on) or a run was queued (perhaps for later).
    if (!known) coming.refresh();
    const bar = barFor(run);
    if (!bar) {
        rowless.add(run.id);
        return;
    }
    bar.dataset.start = run.started_at || run.created_at;
    bar.dataset.end = run.finished_at || "";
    bar.dataset.status = run.status;
    const rect = bar.querySelector("rect");
    rect.setAttribute("class", `tr-fill--${run.status}`);
    rect.querySelector("title").textContent = `Run ${run.id} · ${statusLabel(run.status)}`;
    // Placed at once: a bar never shows its new status without its geometry.
    place(bar, Date.now());
}

new LiveStream({
    url: () => root.dataset.feedUrl,
    handlers: { run: (event) => applyRun(JSON.parse(event.data)) },
    onState: (state, seconds) => showConnection(connection, state, seconds),
    // Runs may have started while the feed was away.
    onOpen: (times) => times > 1 && coming.refresh(),
}).start();

setInterval(layout, Math.max(1000, span / 600));
setInterval(() => coming.refresh(), REFRESH_MS);
