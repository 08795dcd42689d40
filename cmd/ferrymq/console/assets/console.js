// ferrymq web console. Plain JavaScript, no framework, no build step: one
// page that talks to the RabbitMQ-compatible management API under api/ with
// HTTP basic auth. Every piece of text from the API goes into the page as
// textContent, never as markup.
'use strict';
(() => {
  // ---------- small DOM helpers ----------

  const $ = (id) => document.getElementById(id);

  // h(tag, attrs, ...children) builds an element. attrs: class, text, on<event>
  // handlers, properties (value, checked, disabled, hidden, ...) and anything
  // else as an attribute. Children: nodes, strings (text) or arrays; null and
  // false are skipped.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      // Through the CSSOM: the page's CSP refuses style attributes.
      else if (k === 'style') el.style.cssText = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k in el && typeof v !== 'string') el[k] = v;
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else el.append(c instanceof Node ? c : String(c));
    }
  }
  function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

  // ---------- formatting ----------

  function fmtNum(n) {
    if (n === undefined || n === null || n === '') return '';
    if (typeof n !== 'number') return String(n);
    return n.toLocaleString('en-US');
  }
  function fmtRate(r) {
    if (r === undefined || r === null || Number.isNaN(r)) return '';
    return (r >= 100 ? Math.round(r).toLocaleString('en-US') : r.toFixed(1)) + '/s';
  }
  function fmtBytes(n) {
    if (n === undefined || n === null) return '';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + u[i];
  }
  // fmtTime accepts RabbitMQ's milliseconds since the epoch, an RFC 3339
  // string or "2024-01-02 03:04:05".
  function fmtTime(t) {
    if (t === undefined || t === null || t === '' || t === 0) return '';
    const d = typeof t === 'number' ? new Date(t) : new Date(t);
    if (Number.isNaN(d.getTime())) return String(t);
    const p = (x) => String(x).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  function fmtDuration(ms) {
    if (ms === undefined || ms === null) return '';
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const hh = Math.floor(s / 3600); s -= hh * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return (d ? d + 'd ' : '') + (d || hh ? hh + 'h ' : '') + m + 'm ' + s + 's';
  }
  function fmtJSON(v) {
    if (v === undefined || v === null) return '';
    if (typeof v === 'object' && Object.keys(v).length === 0) return '';
    return JSON.stringify(v);
  }
  // rate reads RabbitMQ's message_stats.<key>_details.rate.
  function rate(o, key) {
    const ms = o && o.message_stats;
    const d = ms && ms[key + '_details'];
    return d ? d.rate : undefined;
  }
  function yesNo(b) { return b ? 'yes' : 'no'; }
  function tagList(t) {
    if (Array.isArray(t)) return t.filter(Boolean);
    if (typeof t === 'string') return t.split(',').map((s) => s.trim()).filter(Boolean);
    return [];
  }
  function badge(text, kind) { return h('span', { class: 'badge' + (kind ? ' ' + kind : ''), text }); }
  const enc = encodeURIComponent;

  // ---------- state ----------

  const store = window.sessionStorage;
  const S = {
    auth: store.getItem('ferrymq.auth'), // base64 "user:password"
    user: store.getItem('ferrymq.user'),
    tags: tagList(JSON.parse(store.getItem('ferrymq.tags') || '[]')),
    vhost: store.getItem('ferrymq.vhost') || '',
    refresh: Number(store.getItem('ferrymq.refresh') || 5),
    vhosts: [],
    gen: 0, // bumped on every navigation; stale async work checks it
    view: null, // {refresh} of the current view
    timer: null,
    busy: false,
    samples: [], // overview history for the charts
  };
  const isAdmin = () => S.tags.includes('administrator');

  // ---------- the API ----------

  const API_TIMEOUT_MS = 30000;

  class ApiError extends Error {
    constructor(status, message, body) { super(message); this.status = status; this.body = body; }
  }

  // api calls the management API. A 401 logs out (the credentials no longer
  // work) unless opts.login is set; other failures throw ApiError with
  // RabbitMQ's "reason" as the message.
  async function api(method, path, body, opts = {}) {
    // X-Requested-With asks the server to leave WWW-Authenticate off a 401,
    // which would otherwise make the browser show its own login prompt.
    const headers = Object.assign({ Authorization: 'Basic ' + (opts.auth || S.auth), 'X-Requested-With': 'XMLHttpRequest' }, opts.headers || {});
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    // A broker that accepts the connection but never answers must not leave
    // the page waiting for ever.
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), API_TIMEOUT_MS);
    init.signal = ctl.signal;
    let r, text;
    try {
      r = await fetch('api' + path, init);
      text = await r.text();
    } catch (e) {
      throw new ApiError(0, ctl.signal.aborted ? `No answer from the broker within ${API_TIMEOUT_MS / 1000} s` : 'Broker unreachable: ' + e.message);
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = text; } }
    const reason = data && typeof data === 'object' ? (data.reason || data.error) : data;
    // RabbitMQ answers 401 both to credentials that no longer work and to
    // a user whose tags or permissions do not allow the request; only the
    // first logs the page out.
    if (r.status === 401 && !opts.login && /^(login failed|not_authori[sz]ed)$/i.test(String(reason || ''))) {
      logout('Not authorised: log in again.');
      throw new ApiError(401, 'Not authorised');
    }
    if (!r.ok) {
      const e = new ApiError(r.status, `${r.status} ${reason || r.statusText}`, data);
      e.reason = reason;
      throw e;
    }
    return data;
  }

  // items accepts a plain list or RabbitMQ's pagination envelope.
  function items(data) {
    if (Array.isArray(data)) return data;
    if (data && Array.isArray(data.items)) return data.items;
    return [];
  }

  // ---------- status line, confirm dialog ----------

  // The status line shows an action's result (a "flash") for a few seconds,
  // else when the view was last refreshed or why that failed.
  // keepFlash carries an action's result over the navigation it causes;
  // any other navigation drops it.
  let flashTimer = null, flashing = false, keepFlash = false;
  function flash(msg, kind) {
    const el = $('status');
    el.className = 'status' + (kind === 'error' ? ' error' : '');
    el.textContent = msg;
    el.dataset.kind = kind === 'error' ? 'flash-error' : 'flash';
    flashing = true;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { flashing = false; updatedStatus(); }, 8000);
  }
  let lastUpdate = null, lastError = null;
  function updatedStatus() {
    if (flashing) return;
    const el = $('status');
    if (lastError) { el.className = 'status error'; el.textContent = lastError; el.dataset.kind = 'error'; return; }
    el.className = 'status';
    el.dataset.kind = 'updated';
    el.textContent = lastUpdate ? 'Updated ' + fmtTime(lastUpdate) : '';
  }

  // ask shows the in-page confirm dialog; with an input it resolves to the
  // text typed (or null when cancelled), without one to true or false.
  function ask(text, input) {
    const dlg = $('confirm');
    $('confirm-text').textContent = text;
    const old = dlg.querySelector('input');
    if (old) old.remove();
    let field = null;
    if (input) {
      field = h('input', { id: 'confirm-input', value: input.value || '', placeholder: input.placeholder || '', style: 'width:100%' });
      $('confirm-text').after(field);
    }
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => {
        const ok = dlg.returnValue === 'ok';
        resolve(input ? (ok ? field.value : null) : ok);
      }, { once: true });
      dlg.returnValue = '';
      dlg.showModal();
      (field || $('confirm-ok')).focus();
    });
  }

  // act runs an action, reports its result on the status line and refreshes
  // the view; it never throws.
  // With then set, it goes there instead of refreshing (after a delete, the
  // object's own page has nothing left to show).
  async function act(what, fn, done, then) {
    try {
      const res = await fn();
      flash(typeof done === 'function' ? done(res) : (done || what + ': done.'));
      if (then) { keepFlash = true; location.hash = then; }
      else refreshNow(); // not awaited: the form is free again at once
      return res;
    } catch (e) {
      flash(what + ' failed: ' + e.message, 'error');
      return undefined;
    }
  }

  // ---------- login ----------

  function b64(s) {
    const bytes = new TextEncoder().encode(s);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  async function login(ev) {
    ev.preventDefault();
    const user = $('login-user').value, pass = $('login-pass').value;
    const auth = b64(user + ':' + pass);
    $('login-error').textContent = '';
    $('login-submit').disabled = true;
    try {
      const me = await api('GET', '/whoami', undefined, { auth, login: true });
      S.auth = auth;
      S.user = me.name || user;
      S.tags = tagList(me.tags);
      store.setItem('ferrymq.auth', auth);
      store.setItem('ferrymq.user', S.user);
      store.setItem('ferrymq.tags', JSON.stringify(S.tags));
      $('login-pass').value = '';
      start();
    } catch (e) {
      $('login-error').textContent = e.status !== 401 ? 'Login failed: ' + e.message
        : /management user/i.test(e.reason || '') ? 'Login failed: this user has none of the tags management, monitoring or administrator.'
          : 'Login failed: wrong username or password.';
      $('login-pass').value = ''; // ready for the next try
      $('login-pass').focus();
    } finally {
      $('login-submit').disabled = false;
    }
  }

  function logout(msg) {
    for (const k of ['ferrymq.auth', 'ferrymq.user', 'ferrymq.tags']) store.removeItem(k);
    S.auth = null;
    S.samples = []; // the charts' history was this user's
    S.gen++;
    S.view = null;
    clearTimeout(S.timer);
    $('app').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = msg || '';
    $('login-user').focus();
  }

  async function start() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('whoami').textContent = S.user + (S.tags.length ? ' (' + S.tags.join(', ') + ')' : '');
    for (const a of document.querySelectorAll('#nav a[data-admin]')) a.hidden = !isAdmin();
    // The bridges API is for monitoring and administrator users, as RabbitMQ's node pages.
    $('nav').querySelector('a[data-view="bridges"]').hidden = !isAdmin() && !S.tags.includes('monitoring');
    await loadVhosts();
    route();
  }

  async function loadVhosts() {
    try {
      S.vhosts = items(await api('GET', '/vhosts')).map((v) => v.name);
    } catch (e) {
      S.vhosts = [];
    }
    const sel = $('vhost-select');
    clear(sel).append(h('option', { value: '', text: 'All' }));
    for (const v of S.vhosts) sel.append(h('option', { value: v, text: v }));
    if (S.vhost && !S.vhosts.includes(S.vhost)) S.vhost = '';
    sel.value = S.vhost;
  }

  // ---------- routing and refresh ----------

  const views = {};

  function route() {
    if (!S.auth) return;
    const parts = (location.hash.replace(/^#\/?/, '') || 'overview').split('/').map(decodeURIComponent);
    let name = parts[0];
    if (!views[name]) name = 'overview';
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === name);
    S.gen++;
    lastError = null;
    if (!keepFlash) { flashing = false; clearTimeout(flashTimer); }
    keepFlash = false;
    const main = clear($('view'));
    main.dataset.view = name;
    main.dataset.loaded = ''; // set to the generation once a refresh of this view succeeded
    S.view = views[name](main, parts.slice(1));
    document.title = 'ferrymq: ' + name;
    refreshNow();
  }

  // refreshNow reloads the current view's data and schedules the next poll.
  // A call while a refresh is running makes that one run again when it ends,
  // so what an action changed shows at once.
  let again = false;
  async function refreshNow() {
    clearTimeout(S.timer);
    if (S.busy) { again = true; return; }
    S.busy = true;
    try {
      do {
        again = false;
        const view = S.view, gen = S.gen;
        if (!view || !view.refresh) break;
        try {
          await view.refresh();
          if (gen === S.gen) { lastError = null; lastUpdate = new Date(); $('view').dataset.loaded = String(gen); }
        } catch (e) {
          if (gen === S.gen && S.auth) lastError = e.message;
        }
        if (gen === S.gen) updatedStatus();
      } while (again);
    } finally {
      S.busy = false;
    }
    schedule();
  }
  function schedule() {
    clearTimeout(S.timer);
    if (S.auth && S.refresh > 0) S.timer = setTimeout(() => { if (!document.hidden) refreshNow(); else schedule(); }, S.refresh * 1000);
  }

  // vpath is the path of a list: /<what> or, with a vhost chosen, /<what>/<vhost>
  // (RabbitMQ's per-vhost lists).
  function vpath(what) { return S.vhost ? `/${what}/${enc(S.vhost)}` : `/${what}`; }

  // ---------- reusable listing with paging, filtering and sorting ----------

  // listing builds a table over one API list. cols: {title, key, get(row), num,
  // sort}; key(row) and vhost(row) tag each row (data-name, data-vhost) so tests
  // and people can find it. The server pages it (page, page_size, name,
  // use_regex, sort, sort_reverse) as RabbitMQ does; a server answering with a
  // plain list is paged here.
  function listing(opts) {
    // A vhost column says nothing once one vhost is chosen.
    opts.cols = opts.cols.filter((c) => !(S.vhost && c.key === 'vhost'));
    const st = { page: 1, size: opts.pageSize || 100, filter: '', regex: false, sort: opts.sort || '', rev: false, total: 0 };
    const el = h('div', { class: 'listing', id: opts.id });
    const filter = h('input', { placeholder: 'Filter by name', class: 'filter', oninput: () => { st.page = 1; st.filter = filter.value; debounce(); } });
    const regex = h('input', { type: 'checkbox', onchange: () => { st.regex = regex.checked; st.page = 1; refresh(); } });
    const info = h('span', { class: 'pager' });
    const prev = h('button', { class: 'secondary mini', text: '‹ Prev', onclick: () => { st.page--; refresh(); } });
    const next = h('button', { class: 'secondary mini', text: 'Next ›', onclick: () => { st.page++; refresh(); } });
    const size = h('select', { onchange: () => { st.size = Number(size.value); st.page = 1; refresh(); } },
      [50, 100, 500].map((n) => h('option', { value: String(n), text: n + ' per page', selected: n === st.size })));
    if (opts.filter !== false) el.append(h('div', { class: 'toolbar' }, filter, h('label', { class: 'small check' }, regex, 'regex'), info, prev, next, size));
    const thead = h('tr');
    for (const c of opts.cols) {
      const th = h('th', { class: c.num ? 'num' : '', text: c.title });
      if (c.sort) {
        th.style.cursor = 'pointer';
        th.title = 'Sort';
        th.addEventListener('click', () => { if (st.sort === c.sort) st.rev = !st.rev; else { st.sort = c.sort; st.rev = false; } refresh(); });
      }
      thead.append(th);
    }
    const tbody = h('tbody');
    el.append(h('table', {}, h('thead', {}, thead), tbody));
    let timer = null;
    function debounce() { clearTimeout(timer); timer = setTimeout(refresh, 300); }

    async function refresh() {
      const gen = S.gen;
      const q = new URLSearchParams();
      let rows;
      if (opts.paged !== false) {
        q.set('page', st.page); q.set('page_size', st.size); q.set('pagination', 'true');
        if (st.filter) { q.set('name', st.filter); q.set('use_regex', st.regex ? 'true' : 'false'); }
        if (st.sort) { q.set('sort', st.sort); q.set('sort_reverse', st.rev ? 'true' : 'false'); }
      }
      const path = typeof opts.path === 'function' ? opts.path() : opts.path;
      let data;
      try {
        data = await api('GET', path + (opts.paged !== false ? (path.includes('?') ? '&' : '?') + q : ''));
      } catch (e) {
        if (gen !== S.gen) return;
        // A page beyond the last one (rows deleted meanwhile) is a 400 in RabbitMQ.
        if (e.status === 400 && st.page > 1) { st.page = 1; return refresh(); }
        clear(tbody).append(h('tr', {}, h('td', { colspan: opts.cols.length, class: 'empty error', text: e.status === 401 || e.status === 403 ? 'Not allowed for this user: ' + (e.reason || e.message) : e.message })));
        throw e;
      }
      if (gen !== S.gen) return;
      if (Array.isArray(data)) {
        let all = opts.select ? opts.select(data) : data;
        if (st.filter) {
          let re = null;
          try { re = st.regex ? new RegExp(st.filter) : null; } catch (e) { re = null; }
          all = all.filter((r) => { const n = String(opts.name ? opts.name(r) : r.name); return re ? re.test(n) : n.includes(st.filter); });
        }
        st.total = all.length;
        const pages = Math.max(1, Math.ceil(all.length / st.size));
        if (st.page > pages) st.page = pages;
        rows = all.slice((st.page - 1) * st.size, st.page * st.size);
        info.textContent = `${fmtNum(all.length)} item${all.length === 1 ? '' : 's'}` + (pages > 1 ? `, page ${st.page} of ${pages}` : '');
        prev.disabled = st.page <= 1; next.disabled = st.page >= pages;
      } else {
        rows = opts.select ? opts.select(items(data)) : items(data);
        const pages = Math.max(1, data.page_count || 1);
        st.total = data.filtered_count ?? rows.length;
        info.textContent = `${fmtNum(data.filtered_count ?? rows.length)} of ${fmtNum(data.total_count ?? rows.length)}` + (pages > 1 ? `, page ${data.page || st.page} of ${pages}` : '');
        prev.disabled = st.page <= 1; next.disabled = st.page >= pages;
      }
      if (opts.filter !== false) { prev.hidden = next.hidden = prev.disabled && next.disabled; }
      render(rows);
      if (opts.after) opts.after(rows, data);
    }

    function render(rows) {
      const frag = document.createDocumentFragment();
      if (!rows.length) frag.append(h('tr', {}, h('td', { colspan: opts.cols.length, class: 'empty', text: opts.empty || 'Nothing here.' })));
      for (const r of rows) {
        const tr = h('tr', { 'data-name': opts.key ? opts.key(r) : r.name, 'data-vhost': r.vhost });
        for (const c of opts.cols) {
          let v;
          try { v = c.get ? c.get(r) : r[c.key]; } catch (e) { v = ''; }
          if (typeof v === 'number' && !c.raw) v = fmtNum(v);
          tr.append(h('td', { class: (c.num ? 'num ' : '') + (c.class || ''), 'data-col': c.key || c.title.toLowerCase() }, v));
        }
        frag.append(tr);
      }
      clear(tbody).append(frag);
    }
    return { el, refresh };
  }

  // refreshAll runs several refreshers of one view together.
  function refreshAll(...fns) {
    return async () => {
      const res = await Promise.allSettled(fns.map((f) => f()));
      const bad = res.find((r) => r.status === 'rejected');
      if (bad) throw bad.reason;
    };
  }

  // ---------- forms ----------

  // field makes a labelled input; type 'check' makes a checkbox.
  function field(label, name, type, attrs = {}) {
    if (type === 'check') return h('label', { class: 'check' }, h('input', Object.assign({ type: 'checkbox', name }, attrs)), label);
    if (type === 'select') return h('label', {}, label, h('select', { name }, (attrs.options || []).map((o) => h('option', { value: Array.isArray(o) ? o[0] : o, text: Array.isArray(o) ? o[1] : o, selected: attrs.value === (Array.isArray(o) ? o[0] : o) }))));
    if (type === 'textarea') return h('label', { class: 'wide' }, label, h('textarea', Object.assign({ name }, attrs)));
    return h('label', attrs.wide ? { class: 'wide' } : {}, label, h('input', Object.assign({ name, type: type || 'text' }, attrs)));
  }
  function formValues(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      out[el.name] = el.type === 'checkbox' ? el.checked : el.value;
    }
    return out;
  }
  // parseArgs reads a JSON object from a textarea ("" is {}).
  function parseArgs(text, what) {
    if (!text || !text.trim()) return {};
    let v;
    try { v = JSON.parse(text); } catch (e) { throw new Error(`${what}: not JSON (${e.message})`); }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${what}: a JSON object, such as {"x-message-ttl": 60000}`);
    return v;
  }
  function form(id, title, fields, submit, onsubmit, cls) {
    const f = h('form', { id, class: cls || 'stack' }, fields, h('div', {}, h('button', { type: 'submit', text: submit })));
    f.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const btn = f.querySelector('button[type=submit]');
      btn.disabled = true;
      try { await onsubmit(formValues(f), f); } catch (e) { flash(title + ' failed: ' + e.message, 'error'); } finally { btn.disabled = false; }
    });
    return h('details', { class: 'card' }, h('summary', { text: title }), f);
  }
  function vhostField(name = 'vhost') {
    return field('Virtual host', name, 'select', { options: S.vhosts.length ? S.vhosts : ['/'], value: S.vhost || '/' });
  }

  // publishForm posts one message to an exchange (amq.default for a queue).
  function publishForm(vhost, exchange, defaultKey) {
    return form('publish-form', 'Publish message', [
      field('Routing key', 'routing_key', 'text', { value: defaultKey || '' }),
      field('Delivery mode', 'delivery_mode', 'select', { options: [['1', '1 - non-persistent'], ['2', '2 - persistent']], value: '2' }),
      field('Content type', 'content_type', 'text', { placeholder: 'text/plain' }),
      field('Headers (JSON)', 'headers', 'textarea', { placeholder: '{"x-source": "console"}', rows: 2 }),
      field('Payload', 'payload', 'textarea', { rows: 4, id: 'publish-payload' }),
    ], 'Publish message', async (v) => {
      const props = { delivery_mode: Number(v.delivery_mode) };
      const headers = parseArgs(v.headers, 'Headers');
      if (Object.keys(headers).length) props.headers = headers;
      if (v.content_type) props.content_type = v.content_type;
      const ex = exchange === '' ? 'amq.default' : exchange;
      await act('Publish', () => api('POST', `/exchanges/${enc(vhost)}/${enc(ex)}/publish`,
        { properties: props, routing_key: v.routing_key, payload: v.payload, payload_encoding: 'string' }),
      (res) => res && res.routed === false ? 'Message published, but not routed.' : 'Message published.');
    });
  }

  // ---------- charts ----------

  // chart draws a small line chart of the last samples on a canvas.
  function drawChart(canvas, series, samples) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, ht = canvas.clientHeight || 160;
    canvas.width = w * dpr; canvas.height = ht * dpr;
    const g = canvas.getContext('2d');
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, ht);
    let max = 1;
    for (const s of samples) for (const se of series) max = Math.max(max, s[se.key] || 0);
    const padL = 48, padB = 4, padT = 6;
    g.strokeStyle = '#d8dee2'; g.fillStyle = '#5f6b73'; g.font = '11px system-ui, sans-serif'; g.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const y = padT + (ht - padT - padB) * i / 2;
      g.beginPath(); g.moveTo(padL, y); g.lineTo(w, y); g.stroke();
      const val = max * (1 - i / 2);
      g.fillText(val >= 100 ? Math.round(val).toLocaleString('en-US') : val.toFixed(1), 2, y + 4);
    }
    const n = 60;
    const xs = (i) => padL + (w - padL) * (i + n - samples.length) / (n - 1);
    for (const se of series) {
      g.strokeStyle = se.color; g.lineWidth = 2; g.beginPath();
      samples.forEach((s, i) => { const y = padT + (ht - padT - padB) * (1 - (s[se.key] || 0) / max); if (i) g.lineTo(xs(i), y); else g.moveTo(xs(i), y); });
      if (samples.length === 1) { // one poll so far: a flat line across
        const y = padT + (ht - padT - padB) * (1 - (samples[0][se.key] || 0) / max);
        g.moveTo(padL, y); g.lineTo(w, y);
      }
      g.stroke();
    }
  }
  function legend(series) { return h('div', { class: 'legend' }, series.map((s) => h('span', {}, h('i', { style: 'background:' + s.color }), s.title))); }

  // ---------- views ----------

  function tile(k, v, id) { return h('div', { class: 'tile' }, h('div', { class: 'v', 'data-stat': id, text: v }), h('div', { class: 'k', text: k })); }
  function tiles(list) { return h('div', { class: 'tiles' }, list.map(([k, v, id]) => tile(k, v, id))); }

  views.overview = (main) => {
    const rateSeries = [
      { key: 'publish', title: 'Publish', color: '#0b6e75' },
      { key: 'deliver_get', title: 'Deliver / get', color: '#c4661f' },
      { key: 'ack', title: 'Ack', color: '#5b6abf' },
      { key: 'redeliver', title: 'Redeliver', color: '#b3261e' },
    ];
    const depthSeries = [
      { key: 'ready', title: 'Ready', color: '#0b6e75' },
      { key: 'unacked', title: 'Unacked', color: '#c4661f' },
    ];
    const totals = h('div');
    const rates = h('div');
    const rateCanvas = h('canvas', { class: 'chart', id: 'rate-chart' });
    const depthCanvas = h('canvas', { class: 'chart', id: 'depth-chart' });
    const node = h('div');
    const alarms = h('div', { id: 'alarms' });
    main.append(h('h1', { text: 'Overview' }), totals,
      h('div', { class: 'grid2' },
        h('div', { class: 'card' }, h('h3', { text: 'Message rates' }), rates, rateCanvas, legend(rateSeries)),
        h('div', { class: 'card' }, h('h3', { text: 'Queued messages' }), depthCanvas, legend(depthSeries))),
      h('div', { class: 'grid2' }, h('div', { class: 'card' }, h('h3', { text: 'Node' }), node), h('div', { class: 'card' }, h('h3', { text: 'Alarms' }), alarms)));

    async function refresh() {
      const gen = S.gen;
      const o = await api('GET', '/overview');
      if (gen !== S.gen) return;
      const ot = o.object_totals || {}, qt = o.queue_totals || {}, ms = o.message_stats || {};
      clear(totals).append(tiles([
        ['Connections', fmtNum(ot.connections ?? 0), 'connections'], ['Channels', fmtNum(ot.channels ?? 0), 'channels'],
        ['Exchanges', fmtNum(ot.exchanges ?? 0), 'exchanges'], ['Queues', fmtNum(ot.queues ?? 0), 'queues'],
        ['Consumers', fmtNum(ot.consumers ?? 0), 'consumers'], ['Ready', fmtNum(qt.messages_ready ?? 0), 'messages_ready'],
        ['Unacked', fmtNum(qt.messages_unacknowledged ?? 0), 'messages_unacknowledged'], ['Total messages', fmtNum(qt.messages ?? 0), 'messages'],
      ]));
      // Rates: RabbitMQ's *_details.rate, else the change of the counter
      // since the last poll.
      const now = Date.now();
      const prev = S.samples[S.samples.length - 1];
      const sample = { t: now, ready: qt.messages_ready || 0, unacked: qt.messages_unacknowledged || 0, counts: {} };
      for (const s of rateSeries) {
        const count = ms[s.key] || 0;
        sample.counts[s.key] = count;
        const d = ms[s.key + '_details'];
        if (d && typeof d.rate === 'number') sample[s.key] = d.rate;
        else if (prev && now > prev.t) sample[s.key] = Math.max(0, (count - (prev.counts[s.key] || 0)) * 1000 / (now - prev.t));
        else sample[s.key] = 0;
      }
      S.samples.push(sample);
      if (S.samples.length > 60) S.samples.shift();
      const extra = [['Unroutable (returned)', 'return_unroutable'], ['Unroutable (dropped)', 'drop_unroutable'], ['Confirm', 'confirm']];
      clear(rates).append(h('div', { class: 'tiles' }, rateSeries.map((s) => tile(s.title, fmtRate(sample[s.key]), 'rate-' + s.key)),
        extra.filter(([, k]) => ms[k + '_details']).map(([t, k]) => tile(t, fmtRate(ms[k + '_details'].rate), 'rate-' + k))));
      drawChart(rateCanvas, rateSeries, S.samples);
      drawChart(depthCanvas, depthSeries, S.samples);
      const kv = [
        ['Product', [o.product_name || 'ferrymq', o.product_version || o.rabbitmq_version].filter(Boolean).join(' ')],
        ['Node', o.node], ['Cluster', o.cluster_name], ['Management API', o.management_version],
        ['Listeners', (o.listeners || []).map((l) => `${l.protocol} ${l.ip_address ? l.ip_address + ':' : ''}${l.port}`).join(', ')],
      ];
      try {
        const nodes = await api('GET', '/nodes');
        const n = nodes && nodes[0];
        if (n) kv.push(['Uptime', fmtDuration(n.uptime)], ['Memory', fmtBytes(n.mem_used)], ['File descriptors', n.fd_used !== undefined ? `${fmtNum(n.fd_used)} of ${fmtNum(n.fd_total)}` : ''], ['Disk free', fmtBytes(n.disk_free)]);
      } catch (e) { /* a monitoring view without /api/nodes still shows the rest */ }
      clear(node).append(h('dl', { class: 'kv' }, kv.filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])));
      try {
        await api('GET', '/health/checks/alarms');
        clear(alarms).append(h('span', { class: 'ok', text: 'No alarms in effect.' }));
      } catch (e) {
        if (e.status === 503) {
          const list = (e.body && e.body.alarms) || [];
          clear(alarms).append(h('div', { class: 'error', text: (e.body && e.body.reason) || 'Alarms in effect.' }),
            list.map((a) => h('div', { text: `${a.resource || ''} alarm on ${a.node || 'this node'}` })));
        } else clear(alarms).append(h('span', { class: 'small', text: e.status === 401 ? 'Only monitoring and administrator users see alarms.' : e.message }));
      }
    }
    return { refresh };
  };

  views.connections = (main) => {
    const conns = listing({
      id: 'connections', path: () => S.vhost ? `/vhosts/${enc(S.vhost)}/connections` : '/connections', sort: '', empty: 'No connections.',
      cols: [
        { title: 'Name', key: 'name', class: 'wrap', sort: 'name' },
        { title: 'Protocol', key: 'protocol', sort: 'protocol' },
        { title: 'User', key: 'user', sort: 'user' },
        { title: 'Virtual host', key: 'vhost', sort: 'vhost' },
        { title: 'Client', key: 'client', get: (c) => { const p = c.client_properties || {}; return [p.product, p.version, p.client_id].filter(Boolean).join(' ') || c.client_id || ''; } },
        { title: 'Channels', key: 'channels', num: true, sort: 'channels' },
        { title: 'State', key: 'state', get: (c) => badge(c.state || 'running', c.state === 'blocked' || c.state === 'blocking' ? 'warn' : 'ok') },
        { title: 'From client', key: 'recv_rate', num: true, get: (c) => c.recv_oct_details ? fmtBytes(c.recv_oct_details.rate) + '/s' : '' },
        { title: 'To client', key: 'send_rate', num: true, get: (c) => c.send_oct_details ? fmtBytes(c.send_oct_details.rate) + '/s' : '' },
        { title: 'Connected', key: 'connected_at', get: (c) => fmtTime(c.connected_at), sort: 'connected_at' },
        { title: '', key: 'actions', get: (c) => h('button', { class: 'danger mini', text: 'Close', onclick: () => closeConn(c) }) },
      ],
    });
    const chans = listing({
      id: 'channels', path: () => S.vhost ? `/vhosts/${enc(S.vhost)}/channels` : '/channels', empty: 'No channels.',
      cols: [
        { title: 'Channel', key: 'name', class: 'wrap', sort: 'name' },
        { title: 'User', key: 'user', get: (c) => c.user || (c.connection_details || {}).user },
        { title: 'Mode', key: 'mode', get: (c) => [c.confirm ? 'confirm' : '', c.transactional ? 'tx' : ''].filter(Boolean).join(' ') },
        { title: 'Prefetch', key: 'prefetch_count', num: true },
        { title: 'Unacked', key: 'messages_unacknowledged', num: true, sort: 'messages_unacknowledged' },
        { title: 'Consumers', key: 'consumer_count', num: true },
        { title: 'Publish', key: 'publish', num: true, get: (c) => fmtRate(rate(c, 'publish')) },
        { title: 'Deliver / get', key: 'deliver_get', num: true, get: (c) => fmtRate(rate(c, 'deliver_get')) },
      ],
    });
    async function closeConn(c) {
      const reason = await ask(`Close connection ${c.name} (${c.protocol || ''}, user ${c.user || ''})?`, { value: 'Closed via management console', placeholder: 'Reason' });
      if (reason === null) return;
      // Header values are Latin-1; anything else is replaced, not rejected.
      const safe = reason.replace(/[^\x20-\x7e\xa0-\xff]/g, '?');
      await act('Close connection', () => api('DELETE', `/connections/${enc(c.name)}`, undefined, { headers: { 'X-Reason': safe } }), 'Connection closed.');
    }
    main.append(h('h1', { text: 'Connections' }), h('p', { class: 'small', text: 'AMQP 0-9-1 and MQTT clients alike.' }), conns.el, h('h2', { text: 'Channels' }), chans.el);
    return { refresh: refreshAll(conns.refresh, chans.refresh) };
  };

  function features(o) {
    const f = [];
    if (o.durable) f.push(badge('D', 'ok'));
    if (o.auto_delete) f.push(badge('AD'));
    if (o.exclusive) f.push(badge('Excl'));
    if (o.internal) f.push(badge('I'));
    for (const k of Object.keys(o.arguments || {})) f.push(badge(k.replace(/^x-/, '')));
    return f;
  }
  function queueLink(vhost, name) { return h('a', { href: `#/queues/${enc(vhost)}/${enc(name)}`, text: name }); }
  function exchangeLink(vhost, name) { return h('a', { href: `#/exchanges/${enc(vhost)}/${enc(name || 'amq.default')}`, text: name || '(AMQP default)' }); }

  views.queues = (main, args) => {
    if (args.length >= 2) return queueDetail(main, args[0], args.slice(1).join('/'));
    const list = listing({
      id: 'queues', path: () => vpath('queues'), empty: 'No queues.',
      key: (q) => q.name,
      cols: [
        { title: 'Virtual host', key: 'vhost', sort: 'vhost' },
        { title: 'Name', key: 'name', class: 'wrap', get: (q) => queueLink(q.vhost, q.name), sort: 'name' },
        { title: 'Type', key: 'type', get: (q) => q.type || 'classic' },
        { title: 'Features', key: 'features', get: features },
        { title: 'State', key: 'state', get: (q) => badge(q.state || 'running', q.state && q.state !== 'running' ? 'warn' : 'ok') },
        { title: 'Ready', key: 'messages_ready', num: true, sort: 'messages_ready' },
        { title: 'Unacked', key: 'messages_unacknowledged', num: true, sort: 'messages_unacknowledged' },
        { title: 'Total', key: 'messages', num: true, sort: 'messages' },
        { title: 'Consumers', key: 'consumers', num: true, sort: 'consumers' },
        { title: 'Incoming', key: 'rate_publish', num: true, get: (q) => fmtRate(rate(q, 'publish')) },
        { title: 'Deliver / get', key: 'rate_deliver_get', num: true, get: (q) => fmtRate(rate(q, 'deliver_get')) },
        { title: 'Ack', key: 'rate_ack', num: true, get: (q) => fmtRate(rate(q, 'ack')) },
      ],
    });
    const add = form('add-queue', 'Add a queue', [
      vhostField(), field('Name', 'name', 'text', { required: true }),
      field('Durable', 'durable', 'check', { checked: true }), field('Auto-delete', 'auto_delete', 'check'),
      field('Arguments (JSON)', 'arguments', 'textarea', { placeholder: '{"x-message-ttl": 60000, "x-max-length": 1000}', rows: 2 }),
    ], 'Add queue', async (v, f) => {
      const body = { durable: v.durable, auto_delete: v.auto_delete, arguments: parseArgs(v.arguments, 'Arguments') };
      const res = await act('Add queue', () => api('PUT', `/queues/${enc(v.vhost)}/${enc(v.name)}`, body).then(() => true), `Queue ${v.name} declared.`);
      if (res) f.elements.name.value = '';
    });
    main.append(h('h1', { text: 'Queues' }), list.el, add);
    return { refresh: list.refresh };
  };

  function queueDetail(main, vhost, name) {
    const base = `/queues/${enc(vhost)}/${enc(name)}`;
    const head = h('div'), info = h('div'), consumers = h('div');
    const bindings = listing({
      id: 'queue-bindings', path: base + '/bindings', paged: false, filter: false, empty: 'No bindings.',
      key: (b) => b.source + '|' + b.routing_key,
      cols: [
        { title: 'From exchange', key: 'source', get: (b) => exchangeLink(vhost, b.source) },
        { title: 'Routing key', key: 'routing_key' },
        { title: 'Arguments', key: 'arguments', get: (b) => fmtJSON(b.arguments) },
        { title: '', key: 'actions', get: (b) => b.source === '' ? h('span', { class: 'small', text: 'default binding' }) : h('button', { class: 'secondary mini', text: 'Unbind', onclick: () => unbind(b) }) },
      ],
    });
    const msgs = h('div', { id: 'get-result' });
    main.append(
      h('p', { class: 'small' }, h('a', { href: '#/queues', text: '← Queues' })),
      h('h1', {}, 'Queue ', h('span', { id: 'queue-name', text: name }), h('span', { class: 'small', text: '  in virtual host ' + vhost })),
      head,
      h('div', { class: 'toolbar' },
        h('button', { id: 'purge', class: 'danger', text: 'Purge messages', onclick: purge }),
        h('button', { id: 'delete-queue', class: 'danger secondary', text: 'Delete queue', onclick: del })),
      h('div', { class: 'grid2' }, h('div', { class: 'card' }, h('h3', { text: 'Details' }), info), h('div', { class: 'card' }, h('h3', { text: 'Consumers' }), consumers)),
      h('h2', { text: 'Bindings' }), bindings.el,
      form('bind-queue', 'Add a binding to this queue', [
        field('From exchange', 'source', 'text', { required: true, placeholder: 'amq.topic' }), field('Routing key', 'routing_key'),
        field('Arguments (JSON)', 'arguments', 'textarea', { rows: 1 }),
      ], 'Bind', async (v) => {
        await act('Bind', () => api('POST', `/bindings/${enc(vhost)}/e/${enc(v.source)}/q/${enc(name)}`, { routing_key: v.routing_key, arguments: parseArgs(v.arguments, 'Arguments') }), 'Binding added.');
      }),
      publishForm(vhost, '', name),
      form('get-form', 'Get messages', [
        field('Messages', 'count', 'number', { value: '1', min: '1' }),
        field('Ack mode', 'ackmode', 'select', { options: [['ack_requeue_true', 'Nack, requeue'], ['reject_requeue_true', 'Reject, requeue'], ['ack_requeue_false', 'Ack (removes them)'], ['reject_requeue_false', 'Reject, no requeue']] }),
        field('Encoding', 'encoding', 'select', { options: [['auto', 'Auto string / base64'], ['base64', 'base64']] }),
        field('Truncate at (bytes)', 'truncate', 'number', { value: '50000' }),
      ], 'Get messages', async (v) => {
        const body = { count: Number(v.count) || 1, ackmode: v.ackmode, encoding: v.encoding, requeue: v.ackmode.endsWith('true') };
        if (v.truncate) body.truncate = Number(v.truncate);
        const got = await act('Get messages', () => api('POST', base + '/get', body), (r) => `${(r || []).length} message(s) fetched.`);
        if (got) showMessages(got);
      }),
      msgs);

    function showMessages(list) {
      clear(msgs);
      if (!list.length) { msgs.append(h('p', { class: 'small', text: 'The queue is empty.' })); return; }
      list.forEach((m, i) => msgs.append(h('div', { class: 'msg' },
        h('dl', { class: 'kv' },
          [['Message', String(i + 1)], ['Exchange', m.exchange || '(AMQP default)'], ['Routing key', m.routing_key], ['Redelivered', yesNo(m.redelivered)],
            ['Remaining in queue', fmtNum(m.message_count)], ['Properties', fmtJSON(m.properties)],
            ['Payload', `${fmtNum(m.payload_bytes)} bytes, encoding ${m.payload_encoding}`]].map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v ?? '' })])),
        h('pre', { class: 'payload', text: m.payload }))));
    }
    async function purge() {
      if (!await ask(`Purge every ready message of queue ${name}?`)) return;
      await act('Purge', () => api('DELETE', base + '/contents'), `Queue ${name} purged.`);
    }
    async function del() {
      if (!await ask(`Delete queue ${name} and its messages?`)) return;
      await act('Delete queue', () => api('DELETE', base), `Queue ${name} deleted.`, '#/queues');
    }
    async function unbind(b) {
      await act('Unbind', () => api('DELETE', `/bindings/${enc(vhost)}/e/${enc(b.source)}/q/${enc(name)}/${enc(b.properties_key || '~')}`), 'Binding removed.');
    }

    async function refresh() {
      const gen = S.gen;
      let q;
      try { q = await api('GET', base); } catch (e) {
        if (e.status === 404 && gen === S.gen) { clear(head).append(h('p', { class: 'error', text: 'No such queue.' })); clear(info); }
        throw e;
      }
      if (gen !== S.gen) return;
      clear(head).append(tiles([
        ['Ready', fmtNum(q.messages_ready ?? 0), 'messages_ready'], ['Unacked', fmtNum(q.messages_unacknowledged ?? 0), 'messages_unacknowledged'],
        ['Total', fmtNum(q.messages ?? 0), 'messages'], ['Consumers', fmtNum(q.consumers ?? 0), 'consumers'],
        ['Bytes', fmtBytes(q.message_bytes), 'message_bytes'],
        ['Incoming', fmtRate(rate(q, 'publish')) || '0.0/s', 'rate-publish'], ['Deliver / get', fmtRate(rate(q, 'deliver_get')) || '0.0/s', 'rate-deliver_get'],
        ['Ack', fmtRate(rate(q, 'ack')) || '0.0/s', 'rate-ack'], ['Redeliver', fmtRate(rate(q, 'redeliver')) || '0.0/s', 'rate-redeliver'],
      ]));
      clear(info).append(h('dl', { class: 'kv' }, [
        ['Type', q.type || 'classic'], ['State', q.state || 'running'], ['Durable', yesNo(q.durable)], ['Auto-delete', yesNo(q.auto_delete)],
        ['Exclusive', yesNo(q.exclusive)], ['Arguments', fmtJSON(q.arguments) || 'none'], ['Policy', q.policy || ''],
        ['Idle since', fmtTime(q.idle_since)], ['Node', q.node || ''],
      ].filter(([, v]) => v !== '').map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])));
      let cons = q.consumer_details;
      if (!Array.isArray(cons)) {
        try { cons = items(await api('GET', `/consumers/${enc(vhost)}`)).filter((c) => c.queue && c.queue.name === name); } catch (e) { cons = []; }
      }
      if (gen !== S.gen) return;
      clear(consumers).append(cons.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Tag', 'Channel', 'Ack required', 'Prefetch', 'Exclusive'].map((t) => h('th', { text: t })))),
        h('tbody', {}, cons.map((c) => h('tr', {}, h('td', { text: c.consumer_tag }), h('td', { text: (c.channel_details || {}).name || '' }),
          h('td', { text: yesNo(c.ack_required) }), h('td', { text: fmtNum(c.prefetch_count) }), h('td', { text: yesNo(c.exclusive) })))))
        : h('p', { class: 'small', text: 'No consumers.' }));
      await bindings.refresh();
    }
    return { refresh };
  }

  views.exchanges = (main, args) => {
    if (args.length >= 2) return exchangeDetail(main, args[0], args.slice(1).join('/'));
    const list = listing({
      id: 'exchanges', path: () => vpath('exchanges'), empty: 'No exchanges.',
      key: (x) => x.name,
      cols: [
        { title: 'Virtual host', key: 'vhost', sort: 'vhost' },
        { title: 'Name', key: 'name', class: 'wrap', get: (x) => exchangeLink(x.vhost, x.name), sort: 'name' },
        { title: 'Type', key: 'type', sort: 'type' },
        { title: 'Features', key: 'features', get: features },
        { title: 'Rate in', key: 'rate_in', num: true, get: (x) => fmtRate(rate(x, 'publish_in')) },
        { title: 'Rate out', key: 'rate_out', num: true, get: (x) => fmtRate(rate(x, 'publish_out')) },
      ],
    });
    const add = form('add-exchange', 'Add an exchange', [
      vhostField(), field('Name', 'name', 'text', { required: true }),
      field('Type', 'type', 'select', { options: ['direct', 'fanout', 'topic', 'headers'], value: 'direct' }),
      field('Durable', 'durable', 'check', { checked: true }), field('Auto-delete', 'auto_delete', 'check'), field('Internal', 'internal', 'check'),
      field('Arguments (JSON)', 'arguments', 'textarea', { rows: 2, placeholder: '{"alternate-exchange": "unrouted"}' }),
    ], 'Add exchange', async (v, f) => {
      const body = { type: v.type, durable: v.durable, auto_delete: v.auto_delete, internal: v.internal, arguments: parseArgs(v.arguments, 'Arguments') };
      const ok = await act('Add exchange', () => api('PUT', `/exchanges/${enc(v.vhost)}/${enc(v.name)}`, body).then(() => true), `Exchange ${v.name} declared.`);
      if (ok) f.elements.name.value = '';
    });
    main.append(h('h1', { text: 'Exchanges' }), list.el, add);
    return { refresh: list.refresh };
  };

  function exchangeDetail(main, vhost, name) {
    const isDefault = name === 'amq.default' || name === '';
    const real = isDefault ? '' : name;
    const base = `/exchanges/${enc(vhost)}/${enc(isDefault ? 'amq.default' : name)}`;
    const info = h('div');
    const bcols = (dir) => [
      dir === 'source'
        ? { title: 'To', key: 'destination', get: (b) => b.destination_type === 'queue' ? queueLink(vhost, b.destination) : exchangeLink(vhost, b.destination) }
        : { title: 'From', key: 'source', get: (b) => exchangeLink(vhost, b.source) },
      { title: 'Kind', key: 'destination_type' },
      { title: 'Routing key', key: 'routing_key' },
      { title: 'Arguments', key: 'arguments', get: (b) => fmtJSON(b.arguments) },
      { title: '', key: 'actions', get: (b) => b.source === '' ? '' : h('button', { class: 'secondary mini', text: 'Unbind', onclick: () => unbind(b) }) },
    ];
    const out = listing({ id: 'bindings-out', path: base + '/bindings/source', paged: false, filter: false, empty: isDefault ? 'The default exchange routes to every queue by its name.' : 'No bindings.', key: (b) => b.destination + '|' + b.routing_key, cols: bcols('source') });
    const inn = listing({ id: 'bindings-in', path: base + '/bindings/destination', paged: false, filter: false, empty: 'No bindings.', key: (b) => b.source + '|' + b.routing_key, cols: bcols('destination') });
    async function unbind(b) {
      const t = b.destination_type === 'queue' ? 'q' : 'e';
      await act('Unbind', () => api('DELETE', `/bindings/${enc(vhost)}/e/${enc(b.source)}/${t}/${enc(b.destination)}/${enc(b.properties_key || '~')}`), 'Binding removed.');
    }
    async function del() {
      if (!await ask(`Delete exchange ${name}?`)) return;
      await act('Delete exchange', () => api('DELETE', base), `Exchange ${name} deleted.`, '#/exchanges');
    }
    main.append(
      h('p', { class: 'small' }, h('a', { href: '#/exchanges', text: '← Exchanges' })),
      h('h1', {}, 'Exchange ', h('span', { id: 'exchange-name', text: isDefault ? '(AMQP default)' : name }), h('span', { class: 'small', text: '  in virtual host ' + vhost })),
      isDefault || name.startsWith('amq.') ? null : h('div', { class: 'toolbar' }, h('button', { id: 'delete-exchange', class: 'danger secondary', text: 'Delete exchange', onclick: del })),
      h('div', { class: 'card' }, info),
      h('h2', { text: 'Bindings from this exchange' }), out.el,
      isDefault ? null : form('bind-exchange', 'Add a binding from this exchange', [
        field('To', 'dtype', 'select', { options: [['q', 'queue'], ['e', 'exchange']] }), field('Destination', 'destination', 'text', { required: true }),
        field('Routing key', 'routing_key'), field('Arguments (JSON)', 'arguments', 'textarea', { rows: 1 }),
      ], 'Bind', async (v) => {
        await act('Bind', () => api('POST', `/bindings/${enc(vhost)}/e/${enc(real)}/${v.dtype}/${enc(v.destination)}`, { routing_key: v.routing_key, arguments: parseArgs(v.arguments, 'Arguments') }), 'Binding added.');
      }),
      h('h2', { text: 'Bindings to this exchange' }), inn.el,
      publishForm(vhost, real, ''));
    async function refresh() {
      const gen = S.gen;
      const x = await api('GET', base);
      if (gen !== S.gen) return;
      clear(info).append(h('dl', { class: 'kv' }, [
        ['Type', x.type], ['Durable', yesNo(x.durable)], ['Auto-delete', yesNo(x.auto_delete)], ['Internal', yesNo(x.internal)],
        ['Arguments', fmtJSON(x.arguments) || 'none'], ['Rate in', fmtRate(rate(x, 'publish_in')) || '0.0/s'], ['Rate out', fmtRate(rate(x, 'publish_out')) || '0.0/s'],
      ].map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v ?? '' })])));
      await Promise.all([out.refresh(), inn.refresh()]);
    }
    return { refresh };
  }

  // ---------- MQTT ----------

  views.mqtt = (main) => {
    const sessions = listing({
      id: 'mqtt-sessions', path: () => S.vhost ? `/mqtt/sessions/${enc(S.vhost)}` : '/mqtt/sessions', empty: 'No MQTT sessions.',
      key: (s) => s.client_id, name: (s) => s.client_id,
      cols: [
        { title: 'Virtual host', key: 'vhost' },
        { title: 'Client id', key: 'client_id', class: 'wrap', sort: 'client_id' },
        { title: 'User', key: 'user' },
        { title: 'Protocol', key: 'protocol' },
        { title: 'Connected', key: 'connected', get: (s) => badge(s.connected ? 'connected' : 'offline', s.connected ? 'ok' : '') },
        { title: 'Persistent', key: 'persistent', get: (s) => s.persistent !== undefined ? yesNo(s.persistent) : (s.clean !== undefined ? yesNo(!s.clean) : '') },
        { title: 'Subscriptions', key: 'subscriptions', get: (s) => Array.isArray(s.subscriptions) ? s.subscriptions.map((x) => typeof x === 'string' ? badge(x) : badge(`${x.filter || x.topic} q${x.qos ?? ''}`)) : fmtNum(s.subscriptions) },
        { title: 'Queued', key: 'queued', num: true, sort: 'queued' },
        { title: 'In flight', key: 'inflight', num: true },
        { title: 'Dropped', key: 'dropped', num: true },
        { title: 'Last seen', key: 'last_seen', get: (s) => s.connected ? 'now' : fmtTime(s.last_seen) },
        { title: 'Expires', key: 'expires_at', get: (s) => s.connected ? '' : fmtTime(s.expires_at) },
        { title: '', key: 'actions', get: (s) => h('button', { class: 'danger mini', text: 'Remove', onclick: () => remove(s) }) },
      ],
    });
    const retained = listing({
      id: 'mqtt-retained', path: () => S.vhost ? `/mqtt/retained/${enc(S.vhost)}` : '/mqtt/retained', empty: 'No retained messages.',
      key: (r) => r.topic, name: (r) => r.topic,
      cols: [
        { title: 'Virtual host', key: 'vhost' },
        { title: 'Topic', key: 'topic', class: 'wrap', sort: 'topic' },
        { title: 'QoS', key: 'qos', num: true },
        { title: 'Size', key: 'payload_bytes', num: true, get: (r) => fmtBytes(r.payload_bytes ?? r.size) },
        { title: 'Payload', key: 'payload', class: 'wrap', get: (r) => r.payload === undefined ? ''
          : h('code', { text: String(r.payload).slice(0, 200) + (r.payload_truncated || String(r.payload).length > 200 ? '…' : '') + (r.payload_encoding === 'base64' ? ' (base64)' : '') }) },
        { title: 'Published', key: 'published', get: (r) => fmtTime(r.published) },
      ],
    });
    async function remove(s) {
      if (!await ask(`Remove MQTT session ${s.client_id}${s.connected ? ' and disconnect its client' : ''}? Its subscriptions and queued messages are discarded.`)) return;
      const v = s.vhost || S.vhost || '/';
      await act('Remove session', () => api('DELETE', `/mqtt/sessions/${enc(v)}/${enc(s.client_id)}`), `Session ${s.client_id} removed.`);
    }
    const clearForm = form('clear-retained', 'Clear retained messages', [
      vhostField(), field('Topic filter', 'filter', 'text', { required: true, placeholder: 'sensors/#' }),
    ], 'Clear', async (v) => {
      if (!await ask(`Clear every retained message matching ${v.filter} in virtual host ${v.vhost}?`)) return;
      await act('Clear retained', () => api('DELETE', `/mqtt/retained/${enc(v.vhost)}?filter=${enc(v.filter)}`), (r) => r && r.cleared !== undefined ? `${r.cleared} retained message(s) cleared.` : 'Retained messages cleared.');
    });
    main.append(h('h1', { text: 'MQTT' }), h('h2', { text: 'Sessions' }), sessions.el, h('h2', { text: 'Retained messages' }), retained.el, clearForm);
    return { refresh: refreshAll(sessions.refresh, retained.refresh) };
  };

  // ---------- bridges ----------

  views.bridges = (main) => {
    const list = listing({
      id: 'bridges', path: '/bridges', paged: false, empty: 'No bridges configured.',
      cols: [
        { title: 'Name', key: 'name' },
        { title: 'Upstream', key: 'upstream', class: 'wrap', get: (b) => b.upstream || b.url || '' },
        { title: 'State', key: 'state', get: (b) => b.paused ? badge('paused', 'warn')
          : badge(b.connected ? 'connected' : (b.state || 'disconnected'), b.connected ? 'ok' : 'bad') },
        { title: 'Last error', key: 'last_error', class: 'wrap error', get: (b) => b.last_error || '' },
        { title: 'Error at', key: 'last_error_at', get: (b) => b.last_error ? fmtTime(b.last_error_at) : '' },
        { title: 'Connected since', key: 'connected_at', get: (b) => b.connected ? fmtTime(b.connected_at) : '' },
        { title: 'Backlog', key: 'backlog_messages', num: true },
        { title: 'Backlog bytes', key: 'backlog_bytes', num: true, get: (b) => fmtBytes(b.backlog_bytes) },
        { title: 'Forwarded', key: 'forwarded', num: true },
        { title: 'Received', key: 'received', num: true },
        { title: 'Dropped', key: 'dropped', num: true },
        { title: 'Out', key: 'rate_out', num: true, get: (b) => fmtRate(b.rate_out) },
        { title: 'In', key: 'rate_in', num: true, get: (b) => fmtRate(b.rate_in) },
        { title: '', key: 'actions', get: (b) => b.paused
          ? h('button', { class: 'mini', text: 'Resume', onclick: () => act('Resume', () => api('POST', `/bridges/${enc(b.name)}/resume`), `Bridge ${b.name} resumed.`) })
          : h('button', { class: 'secondary mini', text: 'Pause', onclick: () => act('Pause', () => api('POST', `/bridges/${enc(b.name)}/pause`), `Bridge ${b.name} paused.`) }) },
      ],
    });
    main.append(h('h1', { text: 'Bridges' }), h('p', { class: 'small', text: 'Links to upstream brokers. Outbound messages wait in the durable queue bridge.<name> while a link is down or paused.' }), list.el);
    return { refresh: list.refresh };
  };

  // ---------- admin: users, vhosts, permissions ----------

  views.admin = (main) => {
    const users = listing({
      id: 'users', path: '/users', paged: false, empty: 'No users.',
      cols: [
        { title: 'Name', key: 'name' },
        { title: 'Tags', key: 'tags', get: (u) => tagList(u.tags).map((t) => badge(t)) },
        { title: 'Password', key: 'password', get: (u) => u.password_hash === '' ? 'none' : 'set' },
        { title: '', key: 'actions', get: (u) => u.name === S.user ? '' : h('button', { class: 'danger mini', text: 'Delete', onclick: async () => {
          if (await ask(`Delete user ${u.name}?`)) await act('Delete user', () => api('DELETE', `/users/${enc(u.name)}`), `User ${u.name} deleted.`);
        } }) },
      ],
    });
    const vhosts = listing({
      id: 'vhosts', path: '/vhosts', paged: false, empty: 'No virtual hosts.',
      cols: [
        { title: 'Name', key: 'name' },
        { title: 'Description', key: 'description' },
        { title: 'Messages', key: 'messages', num: true },
        { title: 'Tags', key: 'tags', get: (v) => tagList(v.tags).map((t) => badge(t)) },
        { title: '', key: 'actions', get: (v) => h('button', { class: 'danger mini', text: 'Delete', onclick: async () => {
          if (await ask(`Delete virtual host ${v.name} with all its exchanges, queues and messages?`)) {
            await act('Delete virtual host', () => api('DELETE', `/vhosts/${enc(v.name)}`), `Virtual host ${v.name} deleted.`);
            loadVhosts();
          }
        } }) },
      ],
    });
    const perms = listing({
      id: 'permissions', path: '/permissions', paged: false, empty: 'No permissions.',
      key: (p) => p.user + '@' + p.vhost, name: (p) => p.user,
      cols: [
        { title: 'User', key: 'user' }, { title: 'Virtual host', key: 'vhost' },
        { title: 'Configure', key: 'configure', class: 'wrap' }, { title: 'Write', key: 'write', class: 'wrap' }, { title: 'Read', key: 'read', class: 'wrap' },
        { title: '', key: 'actions', get: (p) => h('button', { class: 'secondary mini', text: 'Clear', onclick: () => act('Clear permissions', () => api('DELETE', `/permissions/${enc(p.vhost)}/${enc(p.user)}`), 'Permissions cleared.') }) },
      ],
    });
    const tperms = listing({
      id: 'topic-permissions', path: '/topic-permissions', paged: false, empty: 'No topic permissions.',
      key: (p) => p.user + '@' + p.vhost + '/' + p.exchange, name: (p) => p.user,
      cols: [
        { title: 'User', key: 'user' }, { title: 'Virtual host', key: 'vhost' }, { title: 'Exchange', key: 'exchange' },
        { title: 'Write', key: 'write', class: 'wrap' }, { title: 'Read', key: 'read', class: 'wrap' },
        { title: '', key: 'actions', get: (p) => h('button', { class: 'secondary mini', text: 'Clear', onclick: () => act('Clear topic permissions', () => api('DELETE', `/topic-permissions/${enc(p.vhost)}/${enc(p.user)}`), 'Topic permissions cleared.') }) },
      ],
    });
    main.append(
      h('h1', { text: 'Admin' }),
      h('h2', { text: 'Users' }), users.el,
      form('add-user', 'Add or update a user', [
        field('Name', 'name', 'text', { required: true }), field('Password', 'password', 'password', { autocomplete: 'new-password' }),
        field('Tags (comma-separated)', 'tags', 'text', { placeholder: 'administrator, management, monitoring' }),
      ], 'Save user', async (v, f) => {
        const body = { tags: v.tags.split(',').map((s) => s.trim()).filter(Boolean).join(',') };
        if (v.password) body.password = v.password; else body.password_hash = '';
        const ok = await act('Save user', () => api('PUT', `/users/${enc(v.name)}`, body).then(() => true), `User ${v.name} saved.`);
        if (ok) { f.elements.password.value = ''; }
      }),
      h('h2', { text: 'Virtual hosts' }), vhosts.el,
      form('add-vhost', 'Add a virtual host', [field('Name', 'name', 'text', { required: true }), field('Description', 'description')], 'Add virtual host', async (v, f) => {
        const ok = await act('Add virtual host', () => api('PUT', `/vhosts/${enc(v.name)}`, v.description ? { description: v.description } : {}).then(() => true), `Virtual host ${v.name} added.`);
        if (ok) { f.elements.name.value = ''; loadVhosts(); }
      }),
      h('h2', { text: 'Permissions' }), perms.el,
      form('set-permissions', 'Set permissions', [
        field('User', 'user', 'text', { required: true }), vhostField(),
        field('Configure', 'configure', 'text', { value: '.*' }), field('Write', 'write', 'text', { value: '.*' }), field('Read', 'read', 'text', { value: '.*' }),
      ], 'Set permissions', async (v) => {
        await act('Set permissions', () => api('PUT', `/permissions/${enc(v.vhost)}/${enc(v.user)}`, { configure: v.configure, write: v.write, read: v.read }), `Permissions of ${v.user} set.`);
      }),
      h('h2', { text: 'Topic permissions' }), tperms.el,
      form('set-topic-permissions', 'Set topic permissions', [
        field('User', 'user', 'text', { required: true }), vhostField(), field('Exchange', 'exchange', 'text', { value: 'amq.topic' }),
        field('Write', 'write', 'text', { value: '.*' }), field('Read', 'read', 'text', { value: '.*' }),
      ], 'Set topic permissions', async (v) => {
        await act('Set topic permissions', () => api('PUT', `/topic-permissions/${enc(v.vhost)}/${enc(v.user)}`, { exchange: v.exchange, write: v.write, read: v.read }), `Topic permissions of ${v.user} set.`);
      }));
    return { refresh: refreshAll(users.refresh, vhosts.refresh, perms.refresh, tperms.refresh) };
  };

  // ---------- definitions ----------

  views.definitions = (main) => {
    const summary = h('div', { id: 'definitions-summary' });
    const fileIn = h('input', { type: 'file', accept: '.json,application/json', id: 'import-file' });
    const text = h('textarea', { id: 'import-text', rows: 8, placeholder: 'Or paste definitions JSON here' });
    const result = h('div', { id: 'import-result' });
    const scope = () => S.vhost ? '/definitions/' + enc(S.vhost) : '/definitions';
    async function exportDefs() {
      const defs = await act('Export', () => api('GET', scope()), 'Definitions exported.');
      if (!defs) return;
      const blob = new Blob([JSON.stringify(defs, null, 2) + '\n'], { type: 'application/json' });
      const a = h('a', { href: URL.createObjectURL(blob), download: `ferrymq-definitions${S.vhost ? '-' + S.vhost.replace(/[^\w.-]/g, '_') : ''}-${new Date().toISOString().slice(0, 10)}.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }
    async function importDefs() {
      let body = text.value;
      if (fileIn.files.length) body = await fileIn.files[0].text();
      if (!body.trim()) { flash('Import: choose a file or paste definitions first.', 'error'); return; }
      try { JSON.parse(body); } catch (e) { flash('Import failed: not JSON (' + e.message + ')', 'error'); return; }
      if (!await ask(`Import these definitions into ${S.vhost ? 'virtual host ' + S.vhost : 'the broker'}? Existing objects with the same names are updated.`)) return;
      clear(result);
      // 204: all applied; 200: applied, with what was not (as asked).
      const res = await act('Import', () => api('POST', scope(), body).then((r) => r || {}),
        (r) => r.warnings && r.warnings.length ? `Definitions imported, with ${r.warnings.length} warning(s).` : 'Definitions imported.');
      if (res && res.warnings && res.warnings.length) {
        result.append(h('p', { class: 'warn', text: 'Not applied, or applied otherwise than asked:' }),
          h('ul', {}, res.warnings.map((w) => h('li', { text: w }))));
      }
      loadVhosts();
    }
    main.append(h('h1', { text: 'Definitions' }),
      h('p', { class: 'small', text: 'Users, virtual hosts, permissions, exchanges, queues and bindings, in RabbitMQ\'s definitions JSON: what RabbitMQ exports imports here, and back. With a virtual host chosen above, only that one.' }),
      h('div', { class: 'card' }, h('h3', { text: 'Export' }), summary, h('button', { id: 'export', text: 'Download definitions', onclick: exportDefs })),
      h('div', { class: 'card' }, h('h3', { text: 'Import' }), h('div', { class: 'toolbar' }, fileIn), text, h('div', { class: 'toolbar' }, h('button', { id: 'import', text: 'Import definitions', onclick: importDefs })), result));
    async function refresh() {
      const gen = S.gen;
      const d = await api('GET', scope());
      if (gen !== S.gen) return;
      const n = (k) => Array.isArray(d[k]) ? d[k].length : 0;
      clear(summary).append(h('p', { text: ['users', 'vhosts', 'permissions', 'topic_permissions', 'exchanges', 'queues', 'bindings', 'policies', 'parameters']
        .filter((k) => k in d).map((k) => `${n(k)} ${k.replace('_', ' ')}`).join(', ') }));
    }
    return { refresh };
  };

  // ---------- wiring ----------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout(''));
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', () => { if (!document.hidden && S.auth) refreshNow(); });
    const rs = $('refresh-select');
    rs.value = String(S.refresh);
    rs.addEventListener('change', () => { S.refresh = Number(rs.value); store.setItem('ferrymq.refresh', rs.value); refreshNow(); });
    $('vhost-select').addEventListener('change', (e) => {
      S.vhost = e.target.value;
      store.setItem('ferrymq.vhost', S.vhost);
      route();
    });
    for (const a of document.querySelectorAll('#nav a[data-view="admin"], #nav a[data-view="definitions"]')) a.dataset.admin = '1';
    if (S.auth) start();
    else logout('');
  });
})();
