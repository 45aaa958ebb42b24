// The log viewer: a virtual list over the lines held in memory.
//
// - Lines arrive in any number; they are queued and rendered in one batch per
//   animation frame, so 10,000 lines a second cost ~60 small updates.
// - Only the rows in view (plus a margin) exist in the DOM, whatever the
//   number of lines: rows are a fixed height and positioned over a spacer.
// - Memory holds at most MAX_LINES lines; older ones are fetched again on
//   demand (scrolling to the top or "Load older lines") from the event list.
// - Text is written with textContent; ANSI colours become spans.
import { renderAnsi, stripAnsi } from "./ansi.js";

const MAX_LINES = 300000; // in memory; the DOM holds only what is in view
const OVERSCAN = 30;
const OLDER_BATCH = 5000;
const MAX_RENDERED_CHARS = 4000;

function lowerBound(lines, seq) {
    let lo = 0;
    let hi = lines.length;
    while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (lines[mid].seq < seq) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

export class LogViewer {
    constructor({ view, spacer, rows, olderButton, info, follow, eventListUrl }) {
        this.view = view;
        this.spacer = spacer;
        this.rows = rows;
        this.olderButton = olderButton;
        this.info = info;
        this.followBox = follow;
        this.eventListUrl = eventListUrl;
        this.lines = []; // {seq, stream, text, kind, continued}, ascending seq
        this.pending = [];
        this.lowestSeq = Infinity; // lowest event seq seen (of any kind)
        this.highestSeq = 0; // highest event seq seen (of any kind)
        this.reachedStart = false;
        this.loadingOlder = false;
        this.frame = 0;
        this.autoTop = -1;
        this.rowHeight = this.measureRowHeight();
        this.pool = [];
        this.query = "";
        this.matches = []; // seqs of matching lines
        this.matchIndex = -1;
        this.matchSeq = null;
        this.lastLag = null;

        view.addEventListener("scroll", () => this.onScroll(), { passive: true });
        follow.addEventListener("change", () => {
            if (follow.checked) this.scrollToEnd();
        });
        olderButton.addEventListener("click", () => this.loadOlder());
        new ResizeObserver(() => this.render()).observe(view);
    }

    get following() {
        return this.followBox.checked;
    }

    measureRowHeight() {
        const probe = document.createElement("div");
        probe.className = "tr-line";
        probe.textContent = "0";
        this.rows.append(probe);
        const height = probe.getBoundingClientRect().height || 18;
        probe.remove();
        return height;
    }

    /** Note an event's seq (any kind): the stream resumes after the highest. */
    seen(seq) {
        if (typeof seq !== "number") return true;
        if (seq <= this.highestSeq) return false; // already have it
        this.highestSeq = seq;
        if (seq < this.lowestSeq) this.lowestSeq = seq;
        if (seq === 1) this.reachedStart = true; // the stream began at the start
        return true;
    }

    /** Queue a line for the next frame. */
    push(line) {
        this.pending.push(line);
        this.schedule();
    }

    schedule() {
        if (this.frame) return;
        if (document.hidden) {
            // No animation frames in a background tab: flush on a timer.
            this.frame = setTimeout(() => this.flush(), 250);
        } else {
            this.frame = requestAnimationFrame(() => this.flush());
        }
    }

    flush() {
        this.frame = 0;
        if (this.pending.length) {
            const batch = this.pending;
            this.pending = [];
            for (const line of batch) this.lines.push(line);
            // How long the newest line took from being stored to being shown.
            const newest = batch[batch.length - 1];
            if (newest.ts) this.lastLag = Date.now() - Date.parse(newest.ts);
            if (this.query) this.addMatches(batch);
            this.evict();
        }
        this.layout();
        if (this.following) this.scrollToEnd(false);
        this.render();
        this.updateInfo();
    }

    evict() {
        const excess = this.lines.length - MAX_LINES;
        if (excess <= 0 || !this.following) return;
        const drop = excess + Math.floor(MAX_LINES / 10);
        this.lines.splice(0, drop);
        this.reachedStart = false;
        this.lowestSeq = this.lines.length ? this.lines[0].seq : this.highestSeq + 1;
        if (this.matches.length) {
            const first = this.lines[0]?.seq ?? Infinity;
            this.matches = this.matches.filter((s) => s >= first);
        }
    }

    /** Older lines from the event list, before the lowest event we have. */
    async loadOlder() {
        if (this.loadingOlder || this.reachedStart || !Number.isFinite(this.lowestSeq)) return;
        this.loadingOlder = true;
        this.olderButton.disabled = true;
        this.olderButton.textContent = "Loading older lines…";
        try {
            const url = `${this.eventListUrl}?before=${this.lowestSeq}&limit=${OLDER_BATCH}`;
            const response = await fetch(url, {
                headers: { Accept: "application/json" },
                credentials: "same-origin",
            });
            if (!response.ok) throw new Error(`HTTP ${response.status}`);
            const body = await response.json();
            const events = (body.events || []).slice().sort((a, b) => a.seq - b.seq);
            const older = [];
            for (const event of events) {
                if (event.seq >= this.lowestSeq) continue;
                const line = lineFromEvent(event.event, event.data, event.seq);
                if (line) older.push(line);
            }
            // first_seq is the run's first stored event: nothing lies before it.
            const first = typeof body.first_seq === "number" ? body.first_seq : 1;
            if (events.length === 0 || events[0].seq <= first) this.reachedStart = true;
            if (events.length) this.lowestSeq = Math.min(this.lowestSeq, events[0].seq);
            this.prepend(older);
        } catch (error) {
            this.olderButton.textContent = "Could not load older lines — try again";
            this.loadingOlder = false;
            this.olderButton.disabled = false;
            throw error;
        }
        this.loadingOlder = false;
        this.olderButton.disabled = false;
        this.olderButton.textContent = "Load older lines";
        this.layout();
        this.render();
        this.updateInfo();
    }

    prepend(older) {
        if (!older.length) return;
        const keep = this.view.scrollTop;
        this.lines = older.concat(this.lines);
        if (this.query) this.addMatches(older, true);
        this.layout();
        // Keep the lines in view where they were.
        this.setScrollTop(keep + older.length * this.rowHeight);
    }

    layout() {
        const height = this.lines.length * this.rowHeight;
        const wanted = `${height}px`;
        if (this.spacer.style.height !== wanted) this.spacer.style.height = wanted;
        this.olderButton.hidden = this.reachedStart || !Number.isFinite(this.lowestSeq);
    }

    setScrollTop(top) {
        this.view.scrollTop = top;
        this.autoTop = this.view.scrollTop;
    }

    scrollToEnd(render = true) {
        this.layout();
        this.setScrollTop(this.view.scrollHeight);
        if (render) this.render();
    }

    atBottom() {
        const v = this.view;
        return v.scrollTop + v.clientHeight >= v.scrollHeight - this.rowHeight * 1.5;
    }

    onScroll() {
        const top = this.view.scrollTop;
        const ours = Math.abs(top - this.autoTop) < 1;
        if (!ours) {
            // The user scrolled: stop following when they leave the end,
            // follow again when they come back to it.
            const bottom = this.atBottom();
            if (this.following && !bottom) this.followBox.checked = false;
            else if (!this.following && bottom && this.lines.length) this.followBox.checked = true;
            this.autoTop = -1;
        }
        if (top < this.rowHeight * 20 && !this.reachedStart && !ours) {
            this.loadOlder().catch(() => {});
        }
        this.render();
    }

    render() {
        const height = this.view.clientHeight;
        const total = this.lines.length;
        const first = Math.max(0, Math.floor(this.view.scrollTop / this.rowHeight) - OVERSCAN);
        const last = Math.min(
            total,
            Math.ceil((this.view.scrollTop + height) / this.rowHeight) + OVERSCAN,
        );
        const count = Math.max(0, last - first);
        while (this.pool.length < count) {
            const row = document.createElement("div");
            row.className = "tr-line";
            const number = document.createElement("span");
            number.className = "tr-ln";
            const text = document.createElement("span");
            text.className = "tr-lt";
            row.append(number, text);
            this.rows.append(row);
            this.pool.push(row);
        }
        while (this.pool.length > count) this.pool.pop().remove();
        this.rows.style.transform = `translateY(${first * this.rowHeight}px)`;
        for (let i = 0; i < count; i++) this.fill(this.pool[i], this.lines[first + i]);
    }

    fill(row, line) {
        const key = `${line.seq}|${this.query}|${this.matchSeq === line.seq}`;
        if (row.dataset.key === key) return;
        row.dataset.key = key;
        row.dataset.seq = String(line.seq);
        let cls = `tr-line tr-line--${line.kind === "log" ? line.stream : "meta"}`;
        if (line.continued) cls += " tr-line--continued";
        if (this.query && this.lineMatches(line)) cls += " is-match";
        if (this.matchSeq === line.seq) cls += " is-current";
        row.className = cls;
        row.firstChild.textContent = String(line.seq);
        const text = row.lastChild;
        text.textContent = "";
        let content = line.text;
        if (content.length > MAX_RENDERED_CHARS) {
            content = `${content.slice(0, MAX_RENDERED_CHARS)}`;
            text.title = `${line.text.length} characters; the download has all of them`;
        } else if (text.title) {
            text.removeAttribute("title");
        }
        renderAnsi(text, content);
        if (content !== line.text) {
            const more = document.createElement("span");
            more.className = "tr-cut";
            more.textContent = ` … ${line.text.length - MAX_RENDERED_CHARS} more characters`;
            text.append(more);
        }
        if (this.query) markMatches(text, this.query);
    }

    updateInfo() {
        const n = this.lines.length;
        let text = `${n.toLocaleString()} line${n === 1 ? "" : "s"}`;
        if (!this.reachedStart && Number.isFinite(this.lowestSeq)) text += " (older not loaded)";
        if (this.info && this.info.textContent !== text) this.info.textContent = text;
    }

    // --- search ---------------------------------------------------------------

    plain(line) {
        if (line.plain === undefined) line.plain = stripAnsi(line.text).toLowerCase();
        return line.plain;
    }

    lineMatches(line) {
        return this.plain(line).includes(this.query);
    }

    addMatches(lines, before = false) {
        const found = lines.filter((l) => this.lineMatches(l)).map((l) => l.seq);
        this.matches = before ? found.concat(this.matches) : this.matches.concat(found);
    }

    /** Go to the next (or previous) line containing `query`; returns [n, total]. */
    search(query, backwards = false) {
        const q = query.trim().toLowerCase();
        if (q !== this.query) {
            this.query = q;
            this.matches = [];
            this.matchSeq = null;
            if (q) this.addMatches(this.lines);
        }
        if (!q || !this.matches.length) {
            this.matchSeq = null;
            this.render();
            return [0, 0];
        }
        let index;
        const current = this.matchSeq ?? (backwards ? Infinity : -Infinity);
        if (backwards) {
            index = this.matches.findLastIndex((s) => s < current);
            if (index === -1) index = this.matches.length - 1;
        } else {
            index = this.matches.findIndex((s) => s > current);
            if (index === -1) index = 0;
        }
        this.matchSeq = this.matches[index];
        this.followBox.checked = false;
        const at = lowerBound(this.lines, this.matchSeq);
        const top = at * this.rowHeight - this.view.clientHeight / 2 + this.rowHeight / 2;
        this.setScrollTop(Math.max(0, top));
        this.render();
        return [index + 1, this.matches.length];
    }
}

function markMatches(parent, query) {
    const walker = document.createTreeWalker(parent, NodeFilter.SHOW_TEXT);
    const nodes = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) nodes.push(node);
    for (const node of nodes) {
        const lower = node.data.toLowerCase();
        let at = lower.indexOf(query);
        if (at === -1) continue;
        const frag = document.createDocumentFragment();
        let from = 0;
        while (at !== -1) {
            frag.append(document.createTextNode(node.data.slice(from, at)));
            const mark = document.createElement("mark");
            mark.textContent = node.data.slice(at, at + query.length);
            frag.append(mark);
            from = at + query.length;
            at = lower.indexOf(query, from);
        }
        frag.append(document.createTextNode(node.data.slice(from)));
        node.replaceWith(frag);
    }
}

/** A line of the viewer for an event, or null for events not shown in the log. */
export function lineFromEvent(kind, data, seq) {
    if (kind === "log") {
        return {
            seq,
            kind: "log",
            stream: data.stream === "stderr" ? "stderr" : "stdout",
            text: String(data.line ?? ""),
            continued: Boolean(data.continued),
            ts: data.ts,
        };
    }
    if (kind === "message") {
        let payload = "";
        try {
            payload = JSON.stringify(data.data);
        } catch {
            payload = "";
        }
        return { seq, kind: "message", stream: "", text: `▸ ${data.name ?? "message"} ${payload}` };
    }
    if (kind === "status") {
        const last = (data.actions || []).at(-1);
        let who = "";
        if (last && last.action !== "input" && last.by) who = ` (${last.action} by ${last.by})`;
        return { seq, kind: "status", stream: "", text: `— ${String(data.status).replace("_", " ")}${who} —` };
    }
    return null;
}
