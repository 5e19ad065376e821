// Building the page's DOM. Everything a session, a model or a person wrote is put in as text (text nodes
// and textContent), never parsed as HTML: the page has no innerHTML, and its Content-Security-Policy
// (Trusted Types) makes the browser refuse one.

// el('div', {class: 'x'}, 'text', child, ...): strings become text nodes.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}

export const LIVE = new Set(['starting', 'idle', 'running']);

export function age(createdAt, now = Date.now()) {
  const t = Date.parse(createdAt || '');
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}`;
  return `${Math.floor(s / 86400)}d`;
}

export function tokensOf(u, prefix = '') {
  if (!u) return 0;
  return ['input_tokens', 'output_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens']
    .reduce((n, k) => n + (Number(u[prefix + k]) || 0), 0);
}

export const money = (x) => `$${(Number(x) || 0).toFixed(4)}`;
export const count = (n) => (n >= 10000 ? `${(n / 1000).toFixed(1)}k` : String(n));

const bytes = (n) => (n >= 2 ** 30 ? `${+(n / 2 ** 30).toFixed(1)} GiB` : `${Math.round(n / 2 ** 20)} MiB`);

// The session's Limits property in words: "2 GiB · 2 CPU · 512 tasks · 30m · $1.0000 · 50k tokens".
export function limitsOf(l) {
  if (!l || !Object.keys(l).length) return '';
  const parts = [];
  if (l.memory) parts.push(bytes(Number(l.memory)));
  if (l.cpu_millis) parts.push(`${+(Number(l.cpu_millis) / 1000).toFixed(2)} CPU`);
  if (l.tasks) parts.push(`${l.tasks} tasks`);
  parts.push(l.timeout_sec ? `timeout ${l.timeout_sec}s` : 'no timeout');
  if (l.budget_usd) parts.push(`budget ${money(l.budget_usd)}`);
  if (l.budget_tokens) parts.push(`budget ${count(Number(l.budget_tokens))} tokens`);
  return parts.join(' · ');
}

function textOf(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((b) => (b && typeof b.text === 'string' ? b.text : JSON.stringify(b))).join('\n');
  }
  return content === undefined ? '' : JSON.stringify(content);
}

function folded(summary, body, open = false) {
  return el('details', { open }, el('summary', {}, summary), el('pre', {}, body));
}

function time(usec) {
  const d = new Date(Number(usec) / 1000);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
}

// One stored event ({seq, time, data}) as a list item, for people.
export function renderEvent(ev) {
  const d = ev.data || {};
  const li = el('li', { class: `event event-${String(d.type || 'unknown').replace(/[^a-z_]/g, '')}`,
    dataset: { seq: String(ev.seq) } });
  li.append(el('span', { class: 'seq', title: time(ev.time) }, `#${ev.seq}`));
  const body = el('div', { class: 'body' });
  li.append(body);

  switch (d.type) {
    case 'system':
      body.append(el('span', { class: 'muted' },
        d.subtype === 'init'
          ? `started${d.model ? `: ${d.model}` : ''}${Array.isArray(d.tools) ? `, ${d.tools.length} tools` : ''}`
          : `${d.subtype || 'system'}${d.hook_name ? `: ${d.hook_name}` : ''}${d.outcome ? ` (${d.outcome})` : ''}`));
      break;
    case 'assistant':
    case 'user': {
      const content = d.message && d.message.content;
      const blocks = Array.isArray(content) ? content : [{ type: 'text', text: textOf(content) }];
      for (const b of blocks) {
        if (!b) continue;
        if (b.type === 'text') {
          body.append(el('p', { class: d.type === 'user' ? 'prompt' : 'text' },
            d.type === 'user' ? el('span', { class: 'who' }, 'prompt') : null, b.text || ''));
        } else if (b.type === 'tool_use') {
          body.append(folded(`tool call: ${b.name || '?'}`, JSON.stringify(b.input ?? {}, null, 2)));
        } else if (b.type === 'tool_result') {
          const text = textOf(b.content);
          body.append(folded(`${b.is_error ? 'tool error' : 'tool result'} (${text.length} chars)`, text));
        } else if (b.type === 'thinking') {
          body.append(folded('thinking', b.thinking || ''));
        } else {
          body.append(folded(b.type || 'block', JSON.stringify(b, null, 2)));
        }
      }
      break;
    }
    case 'result': {
      const parts = [];
      if (d.num_turns !== undefined) parts.push(`${d.num_turns} turns`);
      if (d.duration_ms !== undefined) parts.push(`${(d.duration_ms / 1000).toFixed(1)} s`);
      if (d.total_cost_usd !== undefined) parts.push(money(d.total_cost_usd));
      body.append(el('p', { class: d.is_error ? 'result error' : 'result' },
        el('span', { class: 'who' }, d.is_error ? `failed (${d.subtype || 'error'})` : 'result'),
        typeof d.result === 'string' ? d.result : ''),
      el('p', { class: 'muted' }, parts.join(' · ')));
      break;
    }
    case 'raw':
      body.append(el('pre', {}, d.text || ''));
      break;
    default:
      body.append(folded(String(d.type || 'event'), JSON.stringify(d, null, 2)));
  }
  return li;
}
