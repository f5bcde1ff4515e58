// The study-spec editor: a textarea with line numbers and each validation error shown beside the
// line of the field it names (the API's 422 `loc`, e.g. "activations.smu.alpha").

import { el } from "./common.js";

const LINE_PX = 18; // matches .editor line-height
const PAD_PX = 6; // matches .editor padding-top

export class SpecEditor {
  constructor(root) {
    this.root = root;
    this.text = root.querySelector("textarea");
    this.gutter = root.querySelector(".gutter");
    this.notes = root.querySelector(".notes");
    this.errors = [];
    // Until a submit finds something, the pane beside the text says what it is for.
    this.placeholder = el("div", { class: "placeholder" }, "Problems found on submit show here, beside their lines: errors in red, warnings in amber.");
    this.notes.replaceChildren(this.placeholder);
    this.text.addEventListener("input", () => { this.clearMarks(); this.renderGutter(); });
    this.text.addEventListener("scroll", () => this.syncScroll());
    this.text.addEventListener("keydown", (event) => {
      if (event.key !== "Tab") return;
      event.preventDefault(); // indent with spaces: YAML forbids tabs
      this.text.setRangeText("  ", this.text.selectionStart, this.text.selectionEnd, "end");
      this.renderGutter();
    });
    this.renderGutter();
  }

  get value() { return this.text.value; }

  // New text opens at its first line, caret there too (a focused textarea scrolls to its caret).
  set value(text) {
    this.text.value = text;
    this.text.setSelectionRange(0, 0);
    this.text.scrollTop = 0;
    this.clearMarks();
    this.renderGutter();
  }

  focus() {
    this.text.focus({ preventScroll: true });
    this.text.scrollTop = 0;
    this.syncScroll();
  }

  renderGutter() {
    const lines = this.text.value.split("\n").length;
    const marked = new Map(this.errors.filter((e) => e.line !== null).map((e) => [e.line, e.kind === "warning" ? "warn" : "bad"]));
    this.gutter.replaceChildren(
      ...Array.from({ length: lines }, (_, i) => el("div", { class: marked.get(i) || "" }, String(i + 1))),
    );
    this.syncScroll();
  }

  syncScroll() {
    this.gutter.scrollTop = this.text.scrollTop;
    for (const note of this.notes.querySelectorAll(".note")) note.style.top = `${PAD_PX + Number(note.dataset.line) * LINE_PX - this.text.scrollTop}px`;
  }

  clearMarks() {
    if (!this.errors.length) return;
    this.errors = [];
    this.notes.replaceChildren(this.placeholder);
  }

  // Mark errors (or warnings: kind "warning") [{loc, msg}]; returns those no line was found for.
  mark(errors, kind = "error") {
    this.errors = errors.map((error) => ({ ...error, kind, line: locate(this.text.value, error.loc) }));
    const used = new Map();
    const notes = [];
    for (const error of this.errors) {
      if (error.line === null) continue;
      let line = error.line;
      while (used.has(line)) line += 1; // two errors on one field: stack them
      used.set(line, true);
      notes.push(el("div", { class: kind === "warning" ? "note warning" : "note", dataset: { line: String(line), loc: error.loc }, title: `${error.loc}: ${error.msg}` },
        el("b", {}, lastPart(error.loc)), " ", error.msg));
    }
    this.notes.replaceChildren(...(notes.length ? notes : [this.placeholder]));
    this.renderGutter();
    const first = this.errors.find((e) => e.line !== null);
    if (first) this.text.scrollTop = Math.max(0, first.line * LINE_PX - 60);
    this.syncScroll();
    return this.errors.filter((e) => e.line === null);
  }
}

function lastPart(loc) {
  const parts = String(loc || "").split(".");
  return parts[parts.length - 1] || "spec";
}

const isContent = (line) => line.trim() !== "" && !line.trim().startsWith("#");

// Block structure of YAML (or pretty JSON): list items and keys with their column.
function tokens(lines) {
  const out = [];
  lines.forEach((raw, line) => {
    if (!isContent(raw)) return;
    let indent = raw.length - raw.trimStart().length;
    let rest = raw.trim();
    while (rest === "-" || rest.startsWith("- ")) {
      out.push({ line, indent, item: true });
      const after = rest.slice(1);
      indent += 1 + (after.length - after.trimStart().length);
      rest = after.trimStart();
    }
    const match = /^["']?([^"':{}[\],]+?)["']?\s*:(\s|$)/.exec(rest);
    if (match) out.push({ line, indent, key: match[1].trim() });
  });
  return out;
}

// The 0-based line of a dotted path (the API's `loc`), or the deepest part found, or null.
export function locate(text, loc) {
  if (!loc) return null;
  const all = tokens(text.split("\n"));
  const parts = (Array.isArray(loc) ? loc.join(".") : String(loc)).split(".").filter((p) => p !== "" && p !== "body");
  let scope = all;
  let found = null;
  for (const part of parts) {
    if (!scope.length) break;
    const childIndent = Math.min(...scope.map((t) => t.indent));
    const children = scope.map((t, i) => [t, i]).filter(([t]) => t.indent === childIndent);
    const hit = /^\d+$/.test(part)
      ? children.filter(([t]) => t.item)[Number(part)]
      : children.find(([t]) => t.key === part);
    if (!hit) break;
    const [token, at] = hit;
    found = token.line;
    let end = at + 1;
    while (end < scope.length && scope[end].indent > token.indent) end += 1;
    scope = scope.slice(at + 1, end);
  }
  return found;
}
