// The cc-docker dashboard (docs/dashboard.md): sign-in, the tree of sessions, one session's events,
// questions and notices, the create form. Live updates come over two streams: GET /api/v1/events for the
// tree (every session in the token's scope) and the selected session's WebSocket for its events; nothing
// polls. Session output is only ever inserted as text (render.js).
import { api, ApiError, AuthError, clearToken, followEvents, sessionSocket, setToken, token } from './api.js';
import { age, count, el, limitsOf, LIVE, money, renderEvent, tokensOf } from './render.js';

const $ = (id) => document.getElementById(id);

const state = {
  sessions: new Map(), // id -> the session's JSON (GET /api/v1/sessions/{id}), kept by the events
  questions: [], // GET /api/v1/questions?all=true
  filter: 'all',
  selected: null,
  socket: null,
  lastSeq: 0, // the last seq rendered of the selected session
  streamAbort: null,
  generation: 0, // bumped at sign-out, so that late answers of the old sign-in are dropped
};

// ---- sign-in ----

function showSignin(message) {
  state.generation++;
  if (state.streamAbort) state.streamAbort.abort();
  closeSocket();
  clearToken();
  state.sessions.clear();
  state.selected = null;
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-message').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

// Every call goes through here: a refused token ends the sign-in.
async function call(method, path, body) {
  const gen = state.generation;
  try {
    return await api(method, path, body);
  } catch (e) {
    if (e instanceof AuthError && gen === state.generation) {
      showSignin(`Signed out: ${e.message} (the token is wrong or was revoked).`);
    }
    throw e;
  }
}

async function signIn(t) {
  setToken(t);
  try {
    await api('GET', '/api/v1/sessions');
  } catch (e) {
    clearToken();
    $('signin-message').textContent = e instanceof AuthError
      ? 'That token was refused: it is wrong or has been revoked.'
      : `Cannot reach ccdocker-httpd: ${e.message}`;
    return;
  }
  start();
}

// ---- the tree ----

let renderQueued = false;
function renderSoon() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderTree();
    renderQuestions();
    renderSession();
  });
}

const pendingOf = (id) => state.questions.filter((q) => q.session_id === id && q.status === 'pending'
  && q.type !== 'notification');

function matches(s) {
  if (state.filter === 'live') return LIVE.has(s.state);
  if (state.filter === 'ended') return !LIVE.has(s.state);
  return true;
}

function childrenOf(id) {
  return [...state.sessions.values()].filter((s) => s.parent_id === id)
    .sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
}

function visible(s) {
  return matches(s) || childrenOf(s.id).some(visible);
}

function treeNode(s, now) {
  const u = s.usage || {};
  const waiting = pendingOf(s.id).length;
  const kids = childrenOf(s.id).filter(visible);
  const row = el('div', { class: `node${state.selected === s.id ? ' selected' : ''}`, role: 'button', tabindex: '0',
    dataset: { id: s.id } },
  el('span', { class: `state state-${s.state}`, title: s.state_reason || s.state }, s.state || '?'),
  el('span', { class: 'id' }, s.id),
  s.task_type ? el('span', { class: 'task' }, s.task_type) : null,
  waiting ? el('span', { class: 'waiting', title: 'waiting for an answer' }, `? ${waiting}`) : null,
  el('span', { class: 'age muted' }, age(s.created_at, now)),
  el('span', { class: 'usage muted', title: `${u.calls || 0} model calls` },
    `${count(tokensOf(u))} tok · ${money(u.cost_usd)}`),
  kids.length || s.children?.length
    ? el('span', { class: 'tree-total muted', title: 'this session and its descendants' },
      `tree ${count(tokensOf(u, 'tree_'))} tok · ${money(u.tree_cost_usd)}`) : null,
  s.budget_exhausted ? el('span', { class: 'limit', title: s.budget_exhausted }, 'budget used up') : null,
  s.limits && Object.keys(s.limits).length ? el('div', { class: 'limits muted' }, limitsOf(s.limits)) : null,
  s.state_reason ? el('div', { class: 'reason muted' }, s.state_reason) : null);
  const li = el('li', { dataset: { id: s.id, state: s.state } }, row);
  if (kids.length) li.append(el('ul', {}, kids.map((k) => treeNode(k, now))));
  return li;
}

let treeKey = '';
function renderTree(force = false) {
  const now = Date.now();
  // Rebuilt only when what it shows changed, so that a click or a focus is not lost to a re-render.
  const key = JSON.stringify([state.filter, state.selected, Math.floor(now / 30000),
    state.questions.map((q) => [q.interaction_id, q.status]),
    [...state.sessions.values()].map((s) => [s.id, s.parent_id, s.state, s.state_reason, s.usage, s.budget_exhausted,
      s.children, s.task_type, s.limits])]);
  if (key === treeKey && !force) return;
  treeKey = key;
  const roots = [...state.sessions.values()]
    .filter((s) => !s.parent_id || !state.sessions.has(s.parent_id))
    .sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
  const shown = roots.filter(visible);
  $('tree').replaceChildren(...shown.map((s) => treeNode(s, now)));
  if (!shown.length) $('tree').append(el('li', { class: 'muted' }, 'No sessions.'));
  let tok = 0;
  let cost = 0;
  let live = 0;
  for (const s of roots) {
    tok += tokensOf(s.usage, 'tree_');
    cost += Number(s.usage?.tree_cost_usd) || 0;
  }
  for (const s of state.sessions.values()) if (LIVE.has(s.state)) live++;
  $('totals').textContent = `${state.sessions.size} sessions, ${live} live · ${count(tok)} tokens · ${money(cost)}`;
}

async function fetchSession(id) {
  try {
    const s = await call('GET', `/api/v1/sessions/${encodeURIComponent(id)}`);
    state.sessions.set(s.id, s);
    for (const c of s.children || []) if (!state.sessions.has(c)) fetchSession(c);
    renderSoon();
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      state.sessions.delete(id);
      renderSoon();
    }
  }
}

async function loadAll() {
  const list = await call('GET', '/api/v1/sessions');
  const ids = new Set(list.sessions.map((s) => s.id));
  for (const id of [...state.sessions.keys()]) if (!ids.has(id)) state.sessions.delete(id);
  await Promise.all(list.sessions.map((s) => fetchSession(s.id)));
  await loadQuestions();
}

async function loadQuestions() {
  try {
    const q = await call('GET', '/api/v1/questions?all=true');
    state.questions = q.questions || [];
    renderSoon();
  } catch (e) {
    if (!(e instanceof AuthError)) $('live-status').textContent = `questions: ${e.message}`;
  }
}

function onTreeEvent(name, ev) {
  if (name === 'session') {
    const known = state.sessions.get(ev.id);
    if (ev.change === 'removed') {
      state.sessions.delete(ev.id);
      if (state.selected === ev.id) select(null);
    } else if (ev.change === 'new') {
      state.sessions.set(ev.id, { ...(known || {}), ...ev.session });
    } else if (known) {
      Object.assign(known, ev.session);
    } else {
      fetchSession(ev.id);
    }
    for (const c of ev.session?.children || []) if (!state.sessions.has(c)) fetchSession(c);
    renderSoon();
  } else if (name === 'question' || name === 'question_closed') {
    loadQuestions();
  } else if (name === 'end') {
    $('live-status').textContent = `updates ended (${ev.reason})`;
  }
}

async function followTree() {
  const gen = state.generation;
  state.streamAbort = new AbortController();
  try {
    await followEvents(onTreeEvent, (err) => {
      if (gen !== state.generation) return;
      $('live-status').textContent = 'reconnecting…';
      setTimeout(() => { if (gen === state.generation) followTree(); }, 2000);
    }, state.streamAbort.signal);
  } catch (e) {
    if (gen !== state.generation) return;
    if (e instanceof AuthError) {
      showSignin('Signed out: the live updates were refused (the token is wrong or was revoked).');
      return;
    }
    $('live-status').textContent = `no live updates: ${e.message}; retrying`;
    setTimeout(() => { if (gen === state.generation) followTree(); }, 5000);
    return;
  }
  // Subscribed first, then read, so that nothing changes unseen in between.
  $('live-status').textContent = 'live';
  try {
    await loadAll();
  } catch (e) {
    if (!(e instanceof AuthError)) $('live-status').textContent = `cannot list the sessions: ${e.message}`;
  }
}

// ---- questions and notices ----

function answerForm(q, compact) {
  const input = el('input', { type: 'text', placeholder: 'Your answer', 'aria-label': `answer to ${q.interaction_id}`,
    maxlength: '2000', required: true });
  const error = el('span', { class: 'field-error' });
  const buttons = q.type === 'permission'
    ? [el('button', { type: 'submit', value: 'allow' }, 'Allow'), el('button', { type: 'submit', value: 'deny' }, 'Deny')]
    : [input, el('button', { type: 'submit' }, 'Answer')];
  const form = el('form', { class: 'answer', dataset: { qid: q.interaction_id } }, buttons, error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = q.type === 'permission' ? e.submitter?.value : input.value;
    error.textContent = '';
    try {
      await call('POST', `/api/v1/sessions/${encodeURIComponent(q.session_id)}/questions/`
        + `${encodeURIComponent(q.interaction_id)}/answer`, { text });
      await loadQuestions();
    } catch (err) {
      if (!(err instanceof AuthError)) error.textContent = err.message;
    }
  });
  if (compact) form.classList.add('compact');
  return form;
}

function questionItem(q, withSession) {
  return el('li', { class: `question type-${q.type}`, dataset: { qid: q.interaction_id, session: q.session_id } },
    withSession ? el('a', { href: `#/session/${q.session_id}`, class: 'id' }, q.session_id) : null,
    q.type === 'permission' && q.tool ? el('span', { class: 'task' }, `permission: ${q.tool}`) : null,
    el('p', { class: 'message' }, q.message || ''),
    el('span', { class: 'muted' }, q.attempt ? `attempt ${q.attempt} of ${q.max_attempts}` : ''),
    answerForm(q, false));
}

let questionsKey = '';
function renderQuestions() {
  // Rebuilt only when the list changed: an answer being typed is not wiped by other updates.
  const key = JSON.stringify(state.questions.map((q) => [q.interaction_id, q.status]));
  if (key === questionsKey) return;
  questionsKey = key;
  const pending = state.questions.filter((q) => q.status === 'pending' && q.type !== 'notification');
  $('questions').replaceChildren(...pending.map((q) => questionItem(q, true)));
  if (!pending.length) $('questions').append(el('li', { class: 'muted' }, 'Nothing is waiting.'));
  const notices = state.questions.filter((q) => q.type === 'notification').slice(0, 50);
  $('notices').replaceChildren(...notices.map((q) => el('li', { class: `notice priority-${q.priority || 'normal'}` },
    el('a', { href: `#/session/${q.session_id}`, class: 'id' }, q.session_id), ' ',
    el('span', { class: 'message' }, q.message || ''))));
  if (!notices.length) $('notices').append(el('li', { class: 'muted' }, 'No notices.'));
}

// ---- one session ----

function closeSocket() {
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.onmessage = null;
    state.socket.onopen = null;
    state.socket.close(1000, 'closed by the page');
    state.socket = null;
  }
}

function connect(id) {
  const gen = state.generation;
  const ws = sessionSocket(id, state.lastSeq);
  state.socket = ws;
  $('stream-status').textContent = 'connecting…';
  ws.onopen = () => { $('stream-status').textContent = 'live: new events appear as they are stored'; };
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (state.selected !== id || ev.seq <= state.lastSeq) return; // never twice
    state.lastSeq = ev.seq;
    const list = $('events');
    const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
    list.append(renderEvent(ev));
    if (atEnd) list.scrollTop = list.scrollHeight;
  };
  ws.onclose = async (e) => {
    if (state.socket !== ws || state.selected !== id || gen !== state.generation) return;
    state.socket = null;
    if (e.code === 1000 && e.reason === 'session ended') {
      $('stream-status').textContent = 'the session has ended';
      return;
    }
    // Dropped (too slow, the network, a refused token): ask whether the token still works, then go on
    // from the last seq rendered.
    $('stream-status').textContent = `reconnecting (${e.code}${e.reason ? `: ${e.reason}` : ''})…`;
    try {
      await call('GET', `/api/v1/sessions/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err instanceof AuthError) return;
    }
    setTimeout(() => {
      if (state.selected === id && !state.socket && gen === state.generation) connect(id);
    }, 1000);
  };
}

function select(id) {
  if (id === state.selected) return;
  closeSocket();
  state.selected = id;
  state.lastSeq = 0;
  $('events').replaceChildren();
  $('session-error').textContent = '';
  $('stream-status').textContent = '';
  if (id) {
    if (location.hash !== `#/session/${id}`) history.replaceState(null, '', `#/session/${id}`);
    if (!state.sessions.has(id)) fetchSession(id);
    connect(id);
  } else if (location.hash) {
    history.replaceState(null, '', location.pathname);
  }
  renderSoon();
}

let sessionQuestionsKey = '';
function renderSession() {
  const s = state.selected && state.sessions.get(state.selected);
  $('session').hidden = !state.selected;
  $('session-empty').hidden = !!state.selected;
  if (!state.selected) return;
  $('session-title').textContent = s ? `${s.id}${s.task_type ? ` · ${s.task_type}` : ''}` : state.selected;
  if (!s) return;
  const u = s.usage || {};
  const rows = [
    ['state', `${s.state}${s.state_reason ? ` — ${s.state_reason}` : ''}`],
    ['parent', s.parent_id || '—'],
    ['children', (s.children || []).join(', ') || '—'],
    ['created', `${s.created_at} (${age(s.created_at)} ago)`],
    ['image', s.image || ''],
    ['workspace', s.workspace || ''],
    ['usage', `${u.calls || 0} calls · ${count(tokensOf(u))} tokens · ${money(u.cost_usd)}`],
    ['tree usage', `${u.tree_calls || 0} calls · ${count(tokensOf(u, 'tree_'))} tokens · ${money(u.tree_cost_usd)}`],
    ['limits', limitsOf(s.limits) || '—'],
    ['budget', s.budget_exhausted ? `paused: ${s.budget_exhausted}` : 'within its budget'],
    ['queued prompts', String(s.pending_prompts ?? 0)],
  ];
  $('session-meta').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  const ended = !LIVE.has(s.state);
  $('stop').disabled = ended;
  $('remove').disabled = !ended;
  $('prompt-form').querySelector('button').disabled = ended;
  const qs = pendingOf(s.id);
  const key = JSON.stringify([s.id, qs.map((q) => q.interaction_id)]);
  if (key === sessionQuestionsKey) return;
  sessionQuestionsKey = key;
  $('session-questions').replaceChildren(...qs.map((q) => el('div', { class: 'question type-' + q.type,
    dataset: { qid: q.interaction_id } }, el('p', { class: 'message' }, q.message || ''), answerForm(q, true))));
}

async function sessionAction(fn) {
  $('session-error').textContent = '';
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof AuthError)) $('session-error').textContent = e.message;
  }
}

// ---- create ----

const FIELD_ALIASES = { 'workspace.path': 'workspace', 'workspace.type': 'workspace', config: null };

// The field a refusal names: httpd says "field 'config.memory' ...", ccdockerd "CreateSession: field
// 'memory' ...", and a missing image is no_such_image.
function refusedField(err) {
  if (err.code === 'no_such_image') return 'image';
  const m = /field '([a-z_.]+)'/.exec(err.message) || /'([a-z_]+)'/.exec(err.message);
  if (!m) return null;
  let f = m[1].replace(/^config\./, '');
  if (f in FIELD_ALIASES) f = FIELD_ALIASES[f];
  return f;
}

function createBody(form) {
  const v = (name) => form.elements[name].value.trim();
  const body = { workspace: { type: v('workspace') } };
  if (body.workspace.type === 'host') body.workspace.path = v('workspace_path');
  if (v('prompt')) body.prompt = v('prompt');
  if (v('image')) body.image = v('image');
  if (v('task_type')) body.task_type = v('task_type');
  const config = {};
  if (v('memory')) config.memory = v('memory');
  if (v('cpus')) config.cpus = v('cpus');
  if (v('timeout_seconds')) config.timeout_seconds = /^\d+$/.test(v('timeout_seconds')) ? Number(v('timeout_seconds')) : v('timeout_seconds');
  if (v('network')) config.network = v('network');
  if (v('mcp_servers')) config.mcp_servers = v('mcp_servers').split(',').map((x) => x.trim()).filter(Boolean);
  if (Object.keys(config).length) body.config = config;
  return body;
}

async function create(e) {
  e.preventDefault();
  const form = $('create-form');
  for (const span of form.querySelectorAll('.field-error')) span.textContent = '';
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  $('create-error').textContent = '';
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  try {
    const s = await call('POST', '/api/v1/sessions', createBody(form));
    state.sessions.set(s.id, s);
    form.reset();
    select(s.id);
  } catch (err) {
    if (err instanceof AuthError) return;
    const field = err instanceof ApiError ? refusedField(err) : null;
    const span = field && form.querySelector(`.field-error[data-field="${field}"]`);
    if (span) {
      span.textContent = err.message;
      const input = span.parentElement.querySelector('input, select, textarea');
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      }
    } else {
      $('create-error').textContent = err.message;
    }
  } finally {
    button.disabled = false;
  }
}

// ---- start ----

function fromHash() {
  const m = /^#\/session\/([0-9a-f]{12})$/.exec(location.hash);
  select(m ? m[1] : null);
}

function start() {
  state.generation++;
  $('signin').hidden = true;
  $('app').hidden = false;
  $('signin-message').textContent = '';
  followTree();
  fromHash();
}

let wired = false;
function wire() {
  if (wired) return;
  wired = true;
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    if (t) signIn(t);
  });
  $('signout').addEventListener('click', () => showSignin('Signed out.'));
  for (const r of document.querySelectorAll('input[name=filter]')) {
    r.addEventListener('change', () => { state.filter = r.value; renderSoon(); });
  }
  $('create-form').addEventListener('submit', create);
  const nodeOf = (e) => e.target.closest('#tree .node');
  $('tree').addEventListener('click', (e) => { const n = nodeOf(e); if (n) select(n.dataset.id); });
  $('tree').addEventListener('keydown', (e) => { const n = nodeOf(e); if (n && e.key === 'Enter') select(n.dataset.id); });
  $('prompt-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = state.selected;
    const text = $('prompt').value;
    if (!id || !text.trim()) return;
    sessionAction(async () => {
      await call('POST', `/api/v1/sessions/${encodeURIComponent(id)}/prompts`, { prompt: text });
      $('prompt').value = '';
    });
  });
  $('stop').addEventListener('click', () => {
    const id = state.selected;
    sessionAction(async () => {
      const s = await call('DELETE', `/api/v1/sessions/${encodeURIComponent(id)}`);
      state.sessions.set(s.id, { ...state.sessions.get(s.id), ...s });
      renderSoon();
    });
  });
  $('remove').addEventListener('click', () => {
    const id = state.selected;
    sessionAction(async () => {
      await call('POST', `/api/v1/sessions/${encodeURIComponent(id)}/remove`);
      state.sessions.delete(id);
      select(null);
    });
  });
  window.addEventListener('hashchange', fromHash);
  // Ages move on; the data does not need asking for again.
  setInterval(() => renderTree(), 30000);
}

wire();
if (token()) start();
else showSignin('');
