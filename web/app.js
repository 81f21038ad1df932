// The Stargazer web chat page: one WebSocket to /webchat/ws, the frames of docs/webchat.md.
// No framework; everything the server sends is rendered with textContent, never as HTML.
// With sign-in (docs/webchat.md, "Sign-in") the page first trades an invite link's token
// for a session cookie (or asks who it is), and the session's name is the one shown: there
// is no name to type.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $('connection'),
    connectionText: $('connection-text'),
    joinForm: $('join-form'),
    nameInput: $('name-input'),
    roomInput: $('room-input'),
    joinError: $('join-error'),
    roomList: $('room-list'),
    roomTitle: $('room-title'),
    identity: $('identity'),
    messages: $('messages'),
    typing: $('typing'),
    chatError: $('chat-error'),
    composer: $('composer'),
    text: $('composer-text'),
    send: $('send-button'),
    signinCard: $('signin-card'),
    signinStatus: $('signin-status'),
    signout: $('signout-button'),
    nameField: $('name-field'),
    authNote: $('auth-note'),
    joinButton: $('join-button'),
  };

  const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
  const TYPING_TIMEOUT_MS = 60000;
  const PING_INTERVAL_MS = 25000;
  const MAX_RECONNECT_DELAY_MS = 10000;

  const store = {
    get(key, fallback) {
      try {
        const v = localStorage.getItem(key);
        return v === null ? fallback : v;
      } catch {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, value);
      } catch {
        // storage disabled: the page still works for this visit
      }
    },
  };

  // A per-browser id (not a secret: the chat has no sign-in). getRandomValues also works
  // on plain http:// pages, where crypto.randomUUID does not.
  function newUserId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }
  let userId = store.get('stargazer.userId', '');
  if (!/^[A-Za-z0-9_-]{8,64}$/.test(userId)) {
    userId = newUserId();
    store.set('stargazer.userId', userId);
  }

  function roomFromHash() {
    let h = '';
    try {
      h = decodeURIComponent(location.hash.slice(1));
    } catch {
      h = '';
    }
    return ROOM_RE.test(h) ? h : '';
  }

  const state = {
    ws: null,
    connected: false,
    attempt: 0,
    retryTimer: null,
    countdownTimer: null,
    pingTimer: null,
    name: store.get('stargazer.name', ''),
    wantedRoom: roomFromHash() || store.get('stargazer.room', 'lobby'),
    room: '',
    bot: 'Star',
    messages: new Map(), // id -> message frame of the current room
    typingTurns: new Map(), // turn -> timer
    lastSent: '',
    focusAfterJoin: false,
    auth: 'unknown', // none | invite | unknown (the server could not be asked yet)
    session: null, // signed in: {name, user_id, rooms, admin, ...}
    allowedRooms: [], // the session's rooms; empty: any room
  };

  // ---- sign-in --------------------------------------------------------------------------

  async function fetchJson(url, options = {}) {
    const res = await fetch(url, { credentials: 'same-origin', cache: 'no-store', ...options });
    let body = {};
    try {
      body = await res.json();
    } catch {
      body = {};
    }
    return { status: res.status, body };
  }

  function errorMessage(body, fallback) {
    return (body && body.error && body.error.message) || fallback;
  }

  function applySession(session) {
    state.auth = 'invite';
    state.session = session;
    userId = session.user_id; // the invite's, not this browser's
    state.name = session.name;
    state.allowedRooms = Array.isArray(session.rooms) ? session.rooms.filter((r) => ROOM_RE.test(r)) : [];
    if (state.allowedRooms.length > 0 && !state.allowedRooms.includes(state.wantedRoom)) {
      state.wantedRoom = state.allowedRooms[0];
      ui.roomInput.value = state.wantedRoom;
    }
    ui.nameField.hidden = true;
    ui.signinCard.hidden = false;
    ui.signout.hidden = false;
    ui.joinButton.disabled = false;
    ui.signinStatus.dataset.state = 'signed-in';
    ui.signinStatus.replaceChildren('Signed in as ', el('strong', '', session.name), session.admin ? ' (admin)' : '');
    ui.authNote.textContent = state.allowedRooms.length > 0
      ? `Signed in by invite. Your rooms: ${state.allowedRooms.join(', ')}.`
      : 'Signed in by invite: your name comes from your invitation.';
    renderRooms();
  }

  // Not signed in (no session, or it expired or was revoked): say why, and stop connecting.
  function showSignedOut(message) {
    state.auth = 'invite';
    state.session = null;
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    clearInterval(state.pingTimer);
    const ws = state.ws;
    state.ws = null;
    state.connected = false;
    if (ws) ws.close();
    state.room = '';
    state.messages.clear();
    ui.messages.replaceChildren();
    clearTyping();
    ui.nameField.hidden = true;
    ui.signinCard.hidden = false;
    ui.signout.hidden = true;
    ui.joinButton.disabled = true;
    ui.signinStatus.dataset.state = 'signed-out';
    ui.signinStatus.textContent = message;
    ui.roomTitle.textContent = 'Not signed in';
    ui.identity.textContent = '';
    ui.authNote.textContent = 'This chat is by invitation: open the sign-in link you were given.';
    setConnection('offline', 'Not signed in');
  }

  // Asks the server who this browser is: 'none' (no sign-in), 'signed-in', 'signed-out',
  // or 'unknown' when it cannot be reached (then the connection's retries go on).
  async function checkSession() {
    let r;
    try {
      r = await fetchJson('/webchat/session');
    } catch {
      return 'unknown';
    }
    if (r.status !== 200) return 'unknown';
    if (r.body.auth !== 'invite') {
      state.auth = 'none';
      return 'none';
    }
    if (r.body.signed_in && r.body.session) {
      applySession(r.body.session);
      return 'signed-in';
    }
    showSignedOut(r.body.message || 'Not signed in: open the invite link you were given.');
    return 'signed-out';
  }

  // An invite link (/webchat/signin#<token>): the token is taken out of the address bar and
  // the history before it is used, then traded for the session cookie. It works once.
  async function signInWithLink() {
    const token = location.hash.slice(1);
    history.replaceState(null, '', '/');
    if (!/^[0-9a-f]{64}$/.test(token)) {
      showSignedOut('This sign-in link is incomplete: copy the whole link and open it again.');
      return 'signed-out';
    }
    let r;
    try {
      r = await fetchJson('/webchat/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ invite: token }),
      });
    } catch {
      showSignedOut('The server could not be reached to sign you in: open the link again in a moment.');
      return 'signed-out';
    }
    if (r.status === 201 && r.body.session) {
      applySession(r.body.session);
      return 'signed-in';
    }
    if (r.status === 409) return checkSession(); // this chat has no sign-in
    showSignedOut(errorMessage(r.body, 'This sign-in link does not work: ask for a new one.'));
    return 'signed-out';
  }

  ui.signout.addEventListener('click', async () => {
    try {
      await fetchJson('/webchat/session', { method: 'DELETE' });
    } catch {
      // the server is unreachable: the cookie stays, but this page forgets the session
    }
    showSignedOut('You signed out. Open a new invite link to sign in again.');
  });

  // ---- connection -----------------------------------------------------------------------

  function setConnection(kind, text) {
    ui.connection.dataset.state = kind;
    ui.connectionText.textContent = text;
    updateComposer();
  }

  function connect() {
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    setConnection('connecting', state.attempt === 0 ? 'Connecting…' : 'Reconnecting…');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/webchat/ws`);
    state.ws = ws;
    ws.addEventListener('open', () => {
      state.connected = true;
      state.attempt = 0;
      setConnection('connected', 'Connected');
      clearInterval(state.pingTimer);
      state.pingTimer = setInterval(() => sendFrame({ type: 'ping' }), PING_INTERVAL_MS);
      if (state.name && state.wantedRoom) sendJoin();
    });
    ws.addEventListener('message', (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      handleFrame(frame);
    });
    ws.addEventListener('close', async () => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.connected = false;
      clearInterval(state.pingTimer);
      clearTyping();
      // With sign-in a closed socket may mean a revoked or expired session: ask first.
      if (state.auth !== 'none' && (await checkSession()) === 'signed-out') return;
      scheduleReconnect();
    });
  }

  // Capped exponential backoff with jitter; the countdown is shown.
  function scheduleReconnect() {
    const base = Math.min(MAX_RECONNECT_DELAY_MS, 500 * 2 ** state.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    state.attempt += 1;
    const until = Date.now() + delay;
    const tick = () => {
      const seconds = Math.max(1, Math.ceil((until - Date.now()) / 1000));
      setConnection('offline', `Disconnected. Reconnecting in ${seconds} s…`);
    };
    tick();
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(tick, 1000);
    state.retryTimer = setTimeout(connect, delay);
  }

  window.addEventListener('online', () => {
    if (!state.ws) connect();
  });

  function sendFrame(frame) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    state.ws.send(JSON.stringify(frame));
    return true;
  }

  function sendJoin() {
    if (state.auth === 'invite') return sendFrame({ type: 'join', room: state.wantedRoom }); // the session names us
    return sendFrame({ type: 'join', room: state.wantedRoom, user_id: userId, name: state.name });
  }

  // ---- frames ---------------------------------------------------------------------------

  function handleFrame(f) {
    switch (f.type) {
      case 'hello':
        if (f.bot && f.bot.name) state.bot = f.bot.name;
        if (f.limits) {
          if (f.limits.text_bytes) ui.text.maxLength = f.limits.text_bytes;
          if (f.limits.name_bytes) ui.nameInput.maxLength = f.limits.name_bytes;
          if (f.limits.room_bytes) ui.roomInput.maxLength = f.limits.room_bytes;
        }
        break;
      case 'joined':
        onJoined(f);
        break;
      case 'history':
        if (f.room !== state.room) break;
        ui.messages.setAttribute('aria-busy', 'true');
        for (const m of f.messages || []) state.messages.set(m.id, m);
        renderAll();
        ui.messages.setAttribute('aria-busy', 'false');
        break;
      case 'message':
      case 'file':
        if (f.room !== state.room || state.messages.has(f.id)) break;
        state.messages.set(f.id, f);
        appendMessage(f);
        break;
      case 'typing':
        if (f.room === state.room) setTyping(f.turn || '', f.active);
        break;
      case 'error':
        onError(f);
        break;
      default:
        break;
    }
  }

  function onJoined(f) {
    state.room = f.room;
    state.messages.clear();
    ui.messages.replaceChildren();
    clearTyping();
    ui.joinError.textContent = '';
    ui.chatError.textContent = '';
    ui.roomTitle.textContent = `# ${f.room}`;
    ui.identity.textContent = `You are ${f.name}`;
    document.title = `#${f.room} · Stargazer chat`;
    store.set('stargazer.room', f.room);
    if (location.hash.slice(1) !== f.room) history.replaceState(null, '', `#${f.room}`);
    rememberRoom(f.room);
    updateComposer();
    if (state.focusAfterJoin) {
      state.focusAfterJoin = false;
      ui.text.focus();
    }
  }

  const JOIN_ERRORS = new Set(['bad_room', 'bad_name', 'reserved_name', 'bad_user_id', 'forbidden_room']);
  const SEND_ERRORS = new Set(['text_too_long', 'rate_limited', 'unavailable', 'empty_message', 'not_joined']);

  function onError(f) {
    if (JOIN_ERRORS.has(f.code)) {
      ui.joinError.textContent = f.message;
      (f.code === 'bad_room' || f.code === 'forbidden_room' || state.auth === 'invite' ? ui.roomInput : ui.nameInput).focus();
      return;
    }
    ui.chatError.textContent = f.message;
    if (SEND_ERRORS.has(f.code) && state.lastSent && !ui.text.value) {
      ui.text.value = state.lastSent; // give the unsent text back
      autosize();
    }
    clearTimeout(onError.timer);
    onError.timer = setTimeout(() => {
      ui.chatError.textContent = '';
    }, 8000);
  }

  // ---- typing indicator -------------------------------------------------------------------

  function setTyping(turn, active) {
    clearTimeout(state.typingTurns.get(turn));
    state.typingTurns.delete(turn);
    if (active) state.typingTurns.set(turn, setTimeout(() => setTyping(turn, false), TYPING_TIMEOUT_MS));
    renderTyping();
  }

  function clearTyping() {
    for (const timer of state.typingTurns.values()) clearTimeout(timer);
    state.typingTurns.clear();
    renderTyping();
  }

  function renderTyping() {
    ui.typing.textContent = state.typingTurns.size > 0 ? `${state.bot} is typing…` : '';
  }

  // ---- rendering ------------------------------------------------------------------------

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  function formatSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderMessage(m) {
    const li = el('li', 'message');
    li.dataset.id = m.id;
    if (m.is_bot) li.classList.add('bot');
    else if (m.user_id === userId) li.classList.add('mine');

    const avatar = el('span', 'avatar', (m.user_name || '?').trim().charAt(0).toUpperCase() || '?');
    avatar.setAttribute('aria-hidden', 'true');
    const bubble = el('div', 'bubble');
    const meta = el('p', 'meta');
    const author = el('span', 'author', m.user_name || 'Someone');
    meta.append(author);
    if (m.is_bot) meta.append(el('span', 'badge', 'bot'));
    const when = new Date((m.timestamp || 0) * 1000);
    const time = el('time', 'time', timeFormat.format(when));
    time.dateTime = when.toISOString();
    time.title = dateTimeFormat.format(when);
    meta.append(time);
    bubble.append(meta);

    if (m.type === 'file') {
      const p = el('p', 'file');
      const a = el('a', 'file-link', m.filename);
      a.href = m.url;
      a.download = m.filename;
      p.append(el('span', 'file-icon', '📎'), a, el('span', 'file-size', ` (${formatSize(m.size || 0)})`));
      p.firstChild.setAttribute('aria-hidden', 'true');
      bubble.append(p);
    } else {
      bubble.append(el('p', 'text', m.text));
    }
    if (Array.isArray(m.buttons) && m.buttons.length > 0) {
      const row = el('div', 'buttons');
      for (const b of m.buttons) {
        if (b.url && /^https?:\/\//.test(b.url)) {
          const a = el('a', 'chip', b.label);
          a.href = b.url;
          a.target = '_blank';
          a.rel = 'noopener noreferrer';
          row.append(a);
        } else {
          const btn = el('button', 'chip', b.label);
          btn.type = 'button';
          btn.addEventListener('click', () => sendMessage(b.label));
          row.append(btn);
        }
      }
      bubble.append(row);
    }
    li.append(avatar, bubble);
    return li;
  }

  function nearBottom() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function renderAll() {
    const sorted = [...state.messages.values()].sort((a, b) => (a.timestamp || 0) - (b.timestamp || 0));
    ui.messages.replaceChildren(...sorted.map(renderMessage));
    scrollToBottom();
  }

  function appendMessage(m) {
    const stick = nearBottom() || m.user_id === userId;
    ui.messages.append(renderMessage(m));
    if (stick) scrollToBottom();
  }

  // ---- rooms ----------------------------------------------------------------------------

  function recentRooms() {
    try {
      const list = JSON.parse(store.get('stargazer.rooms', '[]'));
      return Array.isArray(list) ? list.filter((r) => typeof r === 'string' && ROOM_RE.test(r)) : [];
    } catch {
      return [];
    }
  }

  function rememberRoom(room) {
    const list = [room, ...recentRooms().filter((r) => r !== room)].slice(0, 8);
    store.set('stargazer.rooms', JSON.stringify(list));
    renderRooms();
  }

  function renderRooms() {
    const list = state.allowedRooms.length > 0 ? [...state.allowedRooms] : recentRooms();
    if (state.allowedRooms.length === 0 && !list.includes('lobby')) list.push('lobby');
    ui.roomList.replaceChildren(
      ...list.map((room) => {
        const li = el('li');
        const b = el('button', 'room-button', `# ${room}`);
        b.type = 'button';
        if (room === state.room) b.setAttribute('aria-current', 'true');
        b.addEventListener('click', () => {
          ui.roomInput.value = room;
          requestJoin();
        });
        li.append(b);
        return li;
      }),
    );
  }

  // ---- forms ----------------------------------------------------------------------------

  function requestJoin() {
    if (state.auth === 'invite' && !state.session) return;
    const name = state.auth === 'invite' ? state.name : ui.nameInput.value.trim();
    const room = ui.roomInput.value.trim().toLowerCase();
    ui.roomInput.value = room;
    if (!name) {
      ui.joinError.textContent = 'Please enter your name.';
      ui.nameInput.focus();
      return;
    }
    if (!ROOM_RE.test(room)) {
      ui.joinError.textContent = 'Room names are 1–32 lowercase letters, digits, “-” or “_”.';
      ui.roomInput.focus();
      return;
    }
    if (state.allowedRooms.length > 0 && !state.allowedRooms.includes(room)) {
      ui.joinError.textContent = `Your invitation is for the rooms ${state.allowedRooms.join(', ')}.`;
      ui.roomInput.focus();
      return;
    }
    ui.joinError.textContent = '';
    state.name = name;
    state.wantedRoom = room;
    state.focusAfterJoin = true;
    if (state.auth !== 'invite') store.set('stargazer.name', name);
    if (!sendJoin()) ui.joinError.textContent = 'Not connected; you will join when the connection is back.';
  }

  ui.joinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    requestJoin();
  });

  function sendMessage(text) {
    if (!text.trim()) return;
    if (!sendFrame({ type: 'message', text })) {
      ui.chatError.textContent = 'Not connected; the message was not sent.';
      return;
    }
    state.lastSent = text;
  }

  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = ui.text.value;
    if (!text.trim() || !state.connected || !state.room) return;
    sendMessage(text);
    ui.text.value = '';
    autosize();
    ui.text.focus();
  });

  ui.text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  function autosize() {
    ui.text.style.height = 'auto';
    ui.text.style.height = `${Math.min(ui.text.scrollHeight, 200)}px`;
  }
  ui.text.addEventListener('input', autosize);

  function updateComposer() {
    const ready = state.connected && Boolean(state.room);
    ui.text.disabled = !ready;
    ui.send.disabled = !ready;
    ui.text.placeholder = ready
      ? `Message #${state.room}`
      : state.room
        ? 'Waiting for the connection…'
        : 'Join a room to chat';
  }

  window.addEventListener('hashchange', () => {
    const room = roomFromHash();
    if (room && room !== state.room) {
      ui.roomInput.value = room;
      if (state.name) requestJoin();
    }
  });

  // ---- start ----------------------------------------------------------------------------

  ui.nameInput.value = state.name;
  ui.roomInput.value = state.wantedRoom;
  renderRooms();
  updateComposer();
  (async () => {
    const outcome = location.pathname === '/webchat/signin' ? await signInWithLink() : await checkSession();
    if (outcome === 'signed-out') return;
    if (outcome !== 'signed-in' && !state.name) ui.nameInput.focus();
    connect();
  })();
})();
