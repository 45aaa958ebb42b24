// ANSI SGR colours of a log line rendered as spans. Text goes in through
// textContent (text nodes) only: a line holding "<script>" shows as text.
// 16 colours are classes (themed in CSS); 256-colour and RGB values are set
// through the CSSOM, which a style-src CSP allows (unlike style attributes).

// CSI sequences (SGR ends in "m"; the others, e.g. "erase line", are dropped),
// OSC sequences (window titles, hyperlinks) and any other lone escape.
const ESCAPES = /\x1b\[([0-9;:?]*)([ -/]*[@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?/g;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;

export function stripAnsi(text) {
    return text.indexOf("\x1b") === -1
        ? text.replace(CONTROL, "")
        : text.replace(ESCAPES, "").replace(CONTROL, "");
}

function color256(n) {
    if (n < 16) return null; // handled as a class
    if (n >= 232) {
        const v = 8 + (n - 232) * 10;
        return `rgb(${v}, ${v}, ${v})`;
    }
    const i = n - 16;
    const steps = [0, 95, 135, 175, 215, 255];
    return `rgb(${steps[Math.floor(i / 36)]}, ${steps[Math.floor(i / 6) % 6]}, ${steps[i % 6]})`;
}

function applyCodes(state, params) {
    const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
    for (let i = 0; i < codes.length; i++) {
        const c = codes[i];
        if (c === 0) {
            state.fg = state.bg = null;
            state.bold = state.dim = state.italic = state.underline = state.inverse = false;
        } else if (c === 1) state.bold = true;
        else if (c === 2) state.dim = true;
        else if (c === 3) state.italic = true;
        else if (c === 4) state.underline = true;
        else if (c === 7) state.inverse = true;
        else if (c === 22) state.bold = state.dim = false;
        else if (c === 23) state.italic = false;
        else if (c === 24) state.underline = false;
        else if (c === 27) state.inverse = false;
        else if (c >= 30 && c <= 37) state.fg = c - 30;
        else if (c >= 90 && c <= 97) state.fg = c - 90 + 8;
        else if (c === 39) state.fg = null;
        else if (c >= 40 && c <= 47) state.bg = c - 40;
        else if (c >= 100 && c <= 107) state.bg = c - 100 + 8;
        else if (c === 49) state.bg = null;
        else if (c === 38 || c === 48) {
            let value = null;
            if (codes[i + 1] === 5) {
                const n = codes[i + 2] ?? 0;
                value = n < 16 ? n : color256(n);
                i += 2;
            } else if (codes[i + 1] === 2) {
                const [r, g, b] = [codes[i + 2] ?? 0, codes[i + 3] ?? 0, codes[i + 4] ?? 0];
                value = `rgb(${r & 255}, ${g & 255}, ${b & 255})`;
                i += 4;
            }
            if (c === 38) state.fg = value;
            else state.bg = value;
        }
    }
}

function styled(state, text) {
    if (
        state.fg === null &&
        state.bg === null &&
        !state.bold &&
        !state.dim &&
        !state.italic &&
        !state.underline &&
        !state.inverse
    ) {
        return document.createTextNode(text);
    }
    const span = document.createElement("span");
    const classes = [];
    let { fg, bg } = state;
    if (state.inverse) [fg, bg] = [bg ?? "inv-fg", fg ?? "inv-bg"];
    if (typeof fg === "number") classes.push(`ansi-fg-${fg}`);
    else if (fg === "inv-fg") classes.push("ansi-inverse-fg");
    else if (fg) span.style.color = fg;
    if (typeof bg === "number") classes.push(`ansi-bg-${bg}`);
    else if (bg === "inv-bg") classes.push("ansi-inverse-bg");
    else if (bg) span.style.backgroundColor = bg;
    if (state.bold) classes.push("ansi-bold");
    if (state.dim) classes.push("ansi-dim");
    if (state.italic) classes.push("ansi-italic");
    if (state.underline) classes.push("ansi-underline");
    span.className = classes.join(" ");
    span.textContent = text;
    return span;
}

/** Append `text` to `parent`, turning SGR sequences into styled spans. */
export function renderAnsi(parent, text) {
    if (text.indexOf("\x1b") === -1) {
        parent.append(document.createTextNode(text.replace(CONTROL, "")));
        return;
    }
    const state = {
        fg: null,
        bg: null,
        bold: false,
        dim: false,
        italic: false,
        underline: false,
        inverse: false,
    };
    let last = 0;
    ESCAPES.lastIndex = 0;
    for (let m = ESCAPES.exec(text); m !== null; m = ESCAPES.exec(text)) {
        if (m.index > last) {
            parent.append(styled(state, text.slice(last, m.index).replace(CONTROL, "")));
        }
        if (m[2] === "m") applyCodes(state, m[1]);
        last = ESCAPES.lastIndex;
    }
    if (last < text.length) parent.append(styled(state, text.slice(last).replace(CONTROL, "")));
}
