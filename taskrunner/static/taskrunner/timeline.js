// The timeline: the server draws the Gantt chart; this module keeps it live
// from the ONE dashboard feed (new runs, status changes, running bars growing)
// and slides the window with the clock.
import { LiveStream, showConnection, statusLabel } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const root = document.getElementById("timeline");
const svg = root.querySelector("[data-gantt]");
const ticks = svg.querySelector("[data-ticks]");
const connection = document.querySelector("[data-connection]");
const span = Number(root.dataset.span) * 1000;
const left = Number(root.dataset.labelWidth);
const right = Number(root.dataset.plotRight);
const barHeight = svg.querySelector(".tr-gantt-bar rect")?.getAttribute("height") || "18";
const PLACEHOLDER = "987654321";
const TICKS = 6;

function x(ms, start) {
    const f = Math.min(1, Math.max(0, (ms - start) / span));
    return left + f * (right - left);
}

function formatTick(date) {
    const pad = (n) => String(n).padStart(2, "0");
    const time = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
    if (span <= 24 * 3600 * 1000) return time;
    const month = date.toLocaleString(undefined, { month: "short" });
    return `${pad(date.getDate())} ${month} ${time}`;
}

function drawTicks(start) {
    const top = Number(svg.querySelector("[data-now-line]").getAttribute("y1"));
    const bottom = Number(svg.querySelector("[data-now-line]").getAttribute("y2"));
    const nodes = [];
    for (let i = 0; i <= TICKS; i++) {
        const ms = start + (span * i) / TICKS;
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

function layout() {
    const now = Date.now();
    for (const bar of svg.querySelectorAll(".tr-gantt-bar")) place(bar, now);
    drawTicks(now - span);
}

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
    row.append(bar);
    return bar;
}

function applyRun(run) {
    const bar = barFor(run);
    if (!bar) return;
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
}).start();

setInterval(layout, Math.max(1000, span / 600));
