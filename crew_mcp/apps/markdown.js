// Markdown → DOM for the crew-mcp run card. No HTML is ever parsed: every node is made with createElement and every
// piece of text lands through append/textContent, so markup in a crew's output stays text. Links keep only
// absolute http(s) URLs. Supported: headings, paragraphs, lists (nested), block quotes, fenced code, rules, simple
// tables; inline code, strong, emphasis, strikethrough, links and bare URLs. JSON output is pretty-printed.
// Inlined into run_card.html by crew_mcp.apps.card_html(), inside the card's one script scope.

const MAX_MARKDOWN = 200000;  // characters rendered; the rest is cut with a note
const MAX_INLINE = 20000;     // longer paragraphs are shown as plain text (bounded parsing time)

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) node.append(child);
  return node;
}

function renderMarkdown(source) {
  const frag = document.createDocumentFragment();
  let text = String(source == null ? "" : source);
  let cut = false;
  if (text.length > MAX_MARKDOWN) { text = text.slice(0, MAX_MARKDOWN); cut = true; }
  const trimmed = text.trim();
  if (/^[[{][\s\S]*[\]}]$/.test(trimmed)) {
    try {
      const value = JSON.parse(trimmed);
      frag.append(el("pre", "", el("code", "", JSON.stringify(value, null, 2))));
      return frag;
    } catch (_) { /* not JSON: Markdown it is */ }
  }
  blocks(text.replace(/\r\n?/g, "\n").split("\n"), frag, 0);
  if (cut) frag.append(el("p", "muted", "(Output cut: it is longer than the card shows.)"));
  return frag;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function blocks(lines, parent, depth) {
  let para = [];
  const flush = () => {
    if (para.length) parent.append(inlineBlock("p", para.join("\n")));
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      flush();
      const body = [];
      while (++i < lines.length && !(lines[i].trim().startsWith(m[1]) && lines[i].trim().replace(/[`~]/g, "") === "")) {
        body.push(lines[i]);
      }
      const code = el("code", "", body.join("\n"));
      if (m[2]) code.dataset.lang = m[2];
      parent.append(el("pre", "", code));
    } else if (!line.trim()) {
      flush();
    } else if ((m = HEADING.exec(line))) {
      flush();
      parent.append(inlineBlock("h" + Math.min(6, m[1].length + 2), m[2]));
    } else if (RULE.test(line) && !para.length) {
      flush();
      parent.append(el("hr"));
    } else if ((m = QUOTE.exec(line)) && depth < 4) {
      flush();
      const inner = [m[1]];
      while (i + 1 < lines.length && (m = QUOTE.exec(lines[i + 1]))) { inner.push(m[1]); i++; }
      const quote = el("blockquote");
      blocks(inner, quote, depth + 1);
      parent.append(quote);
    } else if ((m = ITEM.exec(line)) && depth < 6) {
      flush();
      i = list(lines, i, parent, depth);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      flush();
      i = table(lines, i, parent);
    } else {
      para.push(line.trim());
    }
  }
  flush();
}

function list(lines, start, parent, depth) {
  const first = ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const listEl = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) listEl.start = parseInt(first[2], 10);
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered || m[1].length > first[1].length + 1) break;
    const indent = m[1].length + m[2].length + 1;
    const body = [m[3]];
    let j = i + 1;
    while (j < lines.length) {
      const next = lines[j];
      const lead = next.length - next.trimStart().length;
      if (!next.trim()) {
        const after = lines[j + 1];
        if (after !== undefined && after.trim() && after.length - after.trimStart().length >= 2) { body.push(""); j++; continue; }
        break;
      }
      if (lead >= 2) { body.push(next.slice(Math.min(lead, indent))); j++; continue; }
      if (ITEM.test(next) || HEADING.test(next) || FENCE.test(next) || QUOTE.test(next)) break;
      body.push(next.trim()); j++;   // a lazy continuation line
    }
    const item = el("li");
    blocks(body, item, depth + 1);
    if (item.childElementCount && item.firstElementChild.tagName === "P" && !body.includes("")) {
      item.firstElementChild.replaceWith(...item.firstElementChild.childNodes);   // a tight list item
    }
    listEl.append(item);
    i = j;
    if (i < lines.length && !lines[i].trim()) {
      if (i + 1 < lines.length && ITEM.test(lines[i + 1])) i++;
      else break;
    }
  }
  parent.append(listEl);
  return i - 1;
}

function cells(line) {
  return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((c) => c.trim());
}

function table(lines, start, parent) {
  const head = cells(lines[start]);
  const tableEl = el("table");
  const headRow = el("tr");
  for (const cell of head) headRow.append(inlineBlock("th", cell));
  tableEl.append(el("thead", "", headRow));
  const body = el("tbody");
  let i = start + 2;
  for (; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) {
    const row = el("tr");
    const values = cells(lines[i]);
    for (let c = 0; c < head.length; c++) row.append(inlineBlock("td", values[c] || ""));
    body.append(row);
  }
  tableEl.append(body);
  parent.append(tableEl);
  return i - 1;
}

function inlineBlock(tag, text) {
  const node = el(tag);
  if (text.length > MAX_INLINE) node.append(text); else inline(text, node, 0);
  return node;
}

const INLINE = new RegExp([
  /\\([!-/:-@[-`{-~])/.source,                                   // 1: an escaped punctuation character
  /(`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)/.source,                   // 2, 3: a code span
  // Emphasis stays on one line, so a stray "*" cannot swallow the lines after it.
  /\*\*(?=\S)([^\n]*?\S)\*\*/.source,                            // 4: strong
  /(?<![\w])__(?=\S)([^\n]*?\S)__(?![\w])/.source,               // 5: strong
  /\*(?=[^\s*])([^\n]*?[^\s*])\*/.source,                        // 6: emphasis
  /(?<![\w])_(?=[^\s_])([^\n]*?[^\s_])_(?![\w])/.source,         // 7: emphasis
  /~~(?=\S)([^\n]*?\S)~~/.source,                                // 8: strikethrough
  /\[([^\]\n]{1,500})\]\(\s*<?([^\s<>()]{1,2000})>?(?:\s+"([^"\n]{0,300})")?\s*\)/.source,  // 9, 10, 11: link
  /<(https?:\/\/[^\s<>]{1,2000})>/.source,                       // 12: autolink
  /(https?:\/\/[^\s<>"'`]{1,2000})/.source,                      // 13: a bare URL
  /(\n)/.source,                                                 // 14: a line break
].join("|"), "g");

function inline(text, parent, depth) {
  if (depth > 6) { parent.append(text); return; }
  const re = new RegExp(INLINE.source, "g");
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    last = re.lastIndex;
    if (m[1] !== undefined) parent.append(m[1]);
    else if (m[2] !== undefined) parent.append(el("code", "", m[3].replace(/^ (.+) $/, "$1")));
    else if (m[4] !== undefined || m[5] !== undefined) nest("strong", m[4] ?? m[5], parent, depth);
    else if (m[6] !== undefined || m[7] !== undefined) nest("em", m[6] ?? m[7], parent, depth);
    else if (m[8] !== undefined) nest("del", m[8], parent, depth);
    else if (m[9] !== undefined) {
      const a = link(m[10], m[11]);
      if (a) { inline(m[9], a, depth + 1); parent.append(a); } else parent.append(m[0]);
    } else if (m[12] !== undefined) {
      const a = link(m[12]);
      parent.append(a ? withText(a, m[12]) : m[0]);
    } else if (m[13] !== undefined) {
      const url = m[13].replace(/[.,;:!?)\]]+$/, "");
      const a = link(url);
      parent.append(a ? withText(a, url) : url);
      re.lastIndex = last = m.index + url.length;
    } else if (m[14] !== undefined) parent.append(el("br"));
  }
  if (last < text.length) parent.append(text.slice(last));
}

function nest(tag, text, parent, depth) {
  const node = el(tag);
  inline(text, node, depth + 1);
  parent.append(node);
}

function withText(node, text) { node.append(text); return node; }

function link(raw, title) {
  let url;
  try { url = new URL(raw); } catch (_) { return null; }
  if (url.protocol !== "https:" && url.protocol !== "http:") return null;
  const a = el("a");
  a.href = url.href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.title = title || url.href;
  return a;
}
