// The dashboard's client of ccdocker-httpd's API (docs/api.md): the token, REST calls, the tree's event
// stream and a session's WebSocket. The token is kept in sessionStorage (this tab only, gone when it
// closes) and sent as Authorization: Bearer, or as the WebSocket subprotocol bearer.TOKEN; never in a URL.

const KEY = 'ccdocker.token';

export const token = () => sessionStorage.getItem(KEY);
export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);

// The token was refused (wrong, or revoked since): the page goes back to sign-in.
export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${token()}`, ...extra };
}

export async function api(method, path, body) {
  const init = { method, headers: headers(), cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const err = data && data.error ? data.error : {};
  if (res.status === 401) throw new AuthError(err.message || 'the token was refused');
  if (!res.ok) throw new ApiError(res.status, err.code || '', err.message || `HTTP ${res.status}`);
  return data;
}

// GET /api/v1/events, Server-Sent Events read with fetch (EventSource cannot send Authorization).
// Resolves once the stream is open; then calls onEvent(name, data) for each event and onEnd(error)
// once when it ends.
export async function followEvents(onEvent, onEnd, signal) {
  const res = await fetch('/api/v1/events', {
    headers: headers({ Accept: 'text/event-stream' }), cache: 'no-store', credentials: 'omit', signal,
  });
  if (res.status === 401) throw new AuthError('the token was refused');
  if (!res.ok || !res.body) throw new ApiError(res.status, '', `the event stream answered HTTP ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  (async () => {
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) name = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length) onEvent(name, JSON.parse(data.join('\n')));
        }
      }
      onEnd(null);
    } catch (e) {
      onEnd(e);
    }
  })();
}

// A session's events after since (docs/api.md "Streams"), authenticated the browser way.
export function sessionSocket(id, since) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${location.host}/api/v1/sessions/${encodeURIComponent(id)}/stream?since=${since}`;
  return new WebSocket(url, ['ccdocker.v1', `bearer.${token()}`]);
}
