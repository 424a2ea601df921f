// The Autonode demo: one ES module, no build step. Caddy serves it on the same origin as the API,
// so the Better Auth session cookie rides along on every fetch and EventSource by itself, and the
// browser's Origin header on writes is the one the backend trusts (the origin of AUTH_BASE_URL).
// Plain fetch on purpose: the typed client (@autonode/client) is TypeScript for build-step apps.

/** Small graphs of the engine's node types (API.md, "Node types"), created with one click. */
const templates = [
  {
    key: 'greeting',
    name: 'Greeting after a pause',
    description: 'trigger.manual, then a 1 s delay, then a JSONata transform of the input.',
    // The pause lets the steps arrive one by one on the live event stream.
    nodes: [
      { id: 'start', type: 'trigger.manual', params: {} },
      { id: 'pause', type: 'delay', params: { ms: 1000 } },
      { id: 'greet', type: 'transform', params: { expression: '"Hello, " & input.name & "!"' } },
    ],
    edges: [
      { source: 'start', target: 'pause' },
      { source: 'pause', target: 'greet' },
    ],
  },
  {
    key: 'echo',
    name: 'Echo the input',
    description: 'trigger.manual, then a transform that returns the input unchanged.',
    nodes: [
      { id: 'start', type: 'trigger.manual', params: {} },
      { id: 'echo', type: 'transform', params: { expression: 'input' } },
    ],
    edges: [{ source: 'start', target: 'echo' }],
  },
  {
    key: 'webhook',
    name: 'Webhook receiver',
    description: 'trigger.webhook (the workflow gets a URL to POST to), then a transform that keeps the request body.',
    nodes: [
      { id: 'hook', type: 'trigger.webhook', params: {} },
      { id: 'body', type: 'transform', params: { expression: 'input.body' } },
    ],
    edges: [{ source: 'hook', target: 'body' }],
  },
];

const TERMINAL_STATUSES = new Set(['completed', 'failed', 'cancelled']);

const element = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    // Every error is problem+json, Better Auth's included: `detail` says what went wrong, `code` which case.
    super(body?.detail ?? body?.title ?? `The server answered ${status}.`);
    this.status = status;
  }
}

/** A same-origin JSON call; answers the parsed body, throws ApiError on a non-2xx status. */
async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function say(text, kind = 'info') {
  const message = element('message');
  message.textContent = text;
  message.dataset.kind = kind;
  message.hidden = !text;
}

/** Runs an action from a button or form, showing its failure instead of losing it in the console. */
function guarded(action) {
  return async (event) => {
    event.preventDefault();
    try {
      await action(event);
    } catch (error) {
      say(error instanceof Error ? error.message : String(error), 'error');
    }
  };
}

// ---- session ------------------------------------------------------------------------------

let currentUser = null;

async function loadSession() {
  try {
    currentUser = await api('GET', '/api/v1/me');
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) throw error;
    currentUser = null;
  }
  element('signed-out').hidden = currentUser !== null;
  element('signed-in').hidden = currentUser === null;
  if (currentUser) {
    element('current-user').textContent = currentUser.email;
    await showRoute();
  } else {
    stopFollowing();
    element('execution').hidden = true;
    closeWorkflow();
    element('workflow-list').replaceChildren();
    element('connection-list').replaceChildren();
  }
}

async function signUp(event) {
  const form = new FormData(event.target);
  await api('POST', '/api/auth/sign-up/email', { name: form.get('name'), email: form.get('email'), password: form.get('password') });
  event.target.reset();
  say('Account created; you are signed in.');
  await loadSession();
}

async function signIn(event) {
  const form = new FormData(event.target);
  await api('POST', '/api/auth/sign-in/email', { email: form.get('email'), password: form.get('password') });
  event.target.reset();
  say('');
  await loadSession();
}

async function signOut() {
  await api('POST', '/api/auth/sign-out', {});
  say('Signed out.');
  await loadSession();
}

// ---- workflows, paged by cursor -------------------------------------------------------------

// cursors[i] fetches page i + 1 (null: the first page); kept so that "Previous" can go back.
let cursors = [null];
let pageIndex = 0;

function pageSize() {
  const size = Number(element('page-size').value);
  return Number.isInteger(size) && size >= 1 && size <= 100 ? size : 5;
}

async function showPage(index) {
  const query = new URLSearchParams({ pageSize: String(pageSize()) });
  if (cursors[index]) query.set('cursor', cursors[index]);
  const list = element('workflow-list');
  list.setAttribute('aria-busy', 'true');
  const page = await api('GET', `/api/v1/workflows?${query}`);
  pageIndex = index;
  cursors = cursors.slice(0, index + 1);
  if (page.hasNext) cursors.push(page.nextCursor);

  list.replaceChildren(...page.items.map(workflowItem));
  list.setAttribute('aria-busy', 'false');
  element('page-number').textContent = String(index + 1);
  element('previous-page').disabled = index === 0;
  element('next-page').disabled = !page.hasNext;
}

const showFirstPage = () => {
  cursors = [null];
  return showPage(0);
};

function workflowItem(workflow) {
  const item = document.createElement('li');
  item.dataset.testid = 'workflow-item';
  item.dataset.workflowId = workflow.id;
  const name = document.createElement('span');
  name.dataset.testid = 'workflow-name';
  name.textContent = workflow.name;
  const open = document.createElement('button');
  open.type = 'button';
  open.dataset.testid = 'open-workflow';
  open.textContent = 'Webhook';
  open.addEventListener('click', guarded(() => openWorkflow(workflow.id)));
  const run = document.createElement('button');
  run.type = 'button';
  run.dataset.testid = 'run-workflow';
  run.textContent = 'Run';
  run.addEventListener('click', guarded(() => runWorkflow(workflow)));
  item.append(name, open, run);
  return item;
}

// ---- one workflow: its webhook URL and recent deliveries ------------------------------------------

// The workflow whose webhook the page shows (null: none is open).
let openedWorkflowId = null;

/** Reads the workflow afresh (its webhook URL changes when it is rotated), then its deliveries. */
async function openWorkflow(id) {
  const workflow = await api('GET', `/api/v1/workflows/${id}`);
  openedWorkflowId = workflow.id;
  element('workflow-detail').hidden = false;
  element('detail-name').textContent = workflow.name;
  // `webhook` is null unless the graph has a trigger.webhook node (API.md, Inbound webhooks).
  element('webhook').hidden = workflow.webhook === null;
  element('no-webhook').hidden = workflow.webhook !== null;
  element('webhook-url').textContent = workflow.webhook?.url ?? '';
  await showDeliveries();
}

function closeWorkflow() {
  openedWorkflowId = null;
  element('workflow-detail').hidden = true;
  element('delivery-list').replaceChildren();
}

/** The newest deliveries of the open workflow, as the API lists them (newest first). */
async function showDeliveries() {
  if (openedWorkflowId === null) return;
  const table = element('delivery-table');
  table.setAttribute('aria-busy', 'true');
  const page = await api('GET', `/api/v1/workflows/${openedWorkflowId}/deliveries?pageSize=10`);
  const list = element('delivery-list');
  list.replaceChildren(...page.items.map(deliveryRow));
  element('deliveries-empty').hidden = list.children.length > 0;
  table.hidden = list.children.length === 0;
  table.setAttribute('aria-busy', 'false');
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function deliveryRow(delivery) {
  const row = document.createElement('tr');
  row.dataset.testid = 'delivery-item';
  row.dataset.deliveryId = delivery.id;
  const status = cell('delivery-status', delivery.status);
  status.dataset.status = delivery.status;
  const received = cell('delivery-received', '');
  const time = document.createElement('time');
  time.dateTime = delivery.receivedAt;
  time.textContent = new Date(delivery.receivedAt).toLocaleString();
  received.append(time);
  const size = cell('delivery-size', formatBytes(delivery.bodyBytes));
  size.dataset.bytes = String(delivery.bodyBytes);
  row.append(status, received, cell('delivery-content-type', delivery.contentType ?? ''), size, cell('delivery-reason', delivery.reason ?? ''));
  return row;
}

async function createFromTemplate(event) {
  const form = new FormData(event.target);
  const template = templates.find((candidate) => candidate.key === form.get('template'));
  if (!template) throw new Error('Pick a template.');
  const workflow = await api('POST', '/api/v1/workflows', {
    name: String(form.get('name')).trim() || template.name,
    description: template.description,
    nodes: template.nodes,
    edges: template.edges,
  });
  say(`Created "${workflow.name}".`);
  // Newest first: the new workflow is at the top of the first page.
  await showFirstPage();
}

// ---- routes: the workflows at /, the connections at /connections ------------------------------

// Caddy answers index.html for any path that is not a file, so both are real, linkable URLs.
const routes = { '/': 'workflows', '/connections': 'connections' };
const routeOf = (pathname) => routes[pathname] ?? 'workflows';

async function showRoute() {
  const route = routeOf(location.pathname);
  element('workflows-page').hidden = route !== 'workflows';
  element('connections-page').hidden = route !== 'connections';
  for (const link of document.querySelectorAll('[data-page]')) {
    if (link.dataset.page === route) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (route === 'connections') await showConnections();
  else await showFirstPage();
}

async function navigate(event) {
  const target = new URL(event.currentTarget.href);
  if (target.pathname !== location.pathname) history.pushState(null, '', target.pathname);
  await showRoute();
}

// ---- connections: listed, never their secrets ---------------------------------------------------

// The API never sends a secret (API.md, Connections): a connection says only `auth.secretSet`.
// This page shows what is there and nothing more; it has no field that could hold a secret.
let connectionsCursor = null;

async function showConnections({ more = false } = {}) {
  const table = element('connection-table');
  const list = element('connection-list');
  const continuing = more && connectionsCursor !== null;
  const query = new URLSearchParams({ pageSize: '50', sortBy: 'name', sortDirection: 'asc' });
  if (continuing) query.set('cursor', connectionsCursor);
  table.setAttribute('aria-busy', 'true');
  const page = await api('GET', `/api/v1/connections?${query}`);
  if (!continuing) list.replaceChildren();
  list.append(...page.items.map(connectionRow));
  connectionsCursor = page.hasNext ? page.nextCursor : null;
  element('more-connections').hidden = !page.hasNext;
  element('connections-empty').hidden = list.children.length > 0;
  table.hidden = list.children.length === 0;
  table.setAttribute('aria-busy', 'false');
}

/** The auth type, with the parts that are not secret: the basic username, the header or query parameter name. */
function describeAuth(auth) {
  switch (auth.type) {
    case 'basic':
      return `basic, user ${auth.username}`;
    case 'header':
      return `header ${auth.name}`;
    case 'query':
      return `query parameter ${auth.name}`;
    default:
      return auth.type;
  }
}

function cell(testid, text) {
  const td = document.createElement('td');
  td.dataset.testid = testid;
  td.textContent = text;
  return td;
}

function connectionRow(connection) {
  const row = document.createElement('tr');
  row.dataset.testid = 'connection-item';
  row.dataset.connectionId = connection.id;
  const auth = cell('connection-auth', describeAuth(connection.auth));
  auth.dataset.authType = connection.auth.type;
  // A `none` connection needs no secret: neither "set" nor "not set" would be true of it.
  const secret = cell('connection-secret', connection.auth.type === 'none' ? 'not needed' : connection.auth.secretSet ? 'set' : 'not set');
  secret.dataset.secretSet = String(connection.auth.secretSet);
  const lastUsed = cell('connection-last-used', '');
  if (connection.lastUsedAt) {
    const time = document.createElement('time');
    time.dateTime = connection.lastUsedAt;
    time.textContent = new Date(connection.lastUsedAt).toLocaleString();
    lastUsed.append(time);
  } else {
    lastUsed.textContent = 'never';
  }
  row.append(cell('connection-name', connection.name), cell('connection-base-url', connection.baseUrl), auth, secret, lastUsed);
  return row;
}

// ---- runs, followed live over server-sent events ---------------------------------------------

let events = null;

function stopFollowing() {
  events?.close();
  events = null;
}

async function runWorkflow(workflow) {
  const execution = await api('POST', `/api/v1/workflows/${workflow.id}/run`, { input: { name: currentUser?.name ?? 'world' } });
  say(`Running "${workflow.name}".`);
  follow(execution);
}

function follow(execution) {
  stopFollowing();
  element('execution').hidden = false;
  element('execution-id').textContent = execution.id;
  element('execution-status').textContent = execution.status;
  element('execution-output').textContent = '';
  element('step-list').replaceChildren();

  const source = new EventSource(`/api/v1/executions/${execution.id}/events`);
  events = source;
  source.addEventListener('step', (event) => showStep(JSON.parse(event.data)));
  source.addEventListener('execution', (event) => {
    const update = JSON.parse(event.data);
    element('execution-status').textContent = update.status;
    if (update.output !== null && update.output !== undefined) element('execution-output').textContent = JSON.stringify(update.output, null, 2);
    if (update.error) element('execution-output').textContent = JSON.stringify(update.error, null, 2);
    // The server ends the stream with the execution; closing here stops EventSource reconnecting.
    if (TERMINAL_STATUSES.has(update.status)) stopFollowing();
  });
}

function showStep(step) {
  const list = element('step-list');
  let item = [...list.children].find((child) => child.dataset.nodeId === step.nodeId);
  if (!item) {
    item = document.createElement('li');
    item.dataset.testid = 'step-item';
    item.dataset.nodeId = step.nodeId;
    list.append(item);
  }
  item.dataset.status = step.status;
  item.textContent = `${step.nodeId}: ${step.status}${step.attempt > 1 ? ` (attempt ${step.attempt})` : ''}`;
}

// ---- wiring ---------------------------------------------------------------------------------

function start() {
  const select = element('template-select');
  select.replaceChildren(
    ...templates.map((template) => {
      const option = document.createElement('option');
      option.value = template.key;
      option.textContent = template.name;
      return option;
    }),
  );
  const nameInput = element('workflow-name');
  nameInput.value = templates[0].name;
  select.addEventListener('change', () => {
    nameInput.value = templates.find((template) => template.key === select.value)?.name ?? '';
  });

  element('sign-up-form').addEventListener('submit', guarded(signUp));
  element('sign-in-form').addEventListener('submit', guarded(signIn));
  element('sign-out').addEventListener('click', guarded(signOut));
  element('create-form').addEventListener('submit', guarded(createFromTemplate));
  element('next-page').addEventListener('click', guarded(() => showPage(pageIndex + 1)));
  element('previous-page').addEventListener('click', guarded(() => showPage(pageIndex - 1)));
  element('page-size').addEventListener('change', guarded(showFirstPage));
  for (const link of document.querySelectorAll('[data-page]')) {
    link.addEventListener('click', (event) => {
      // A click asking for a new tab or window is left to the browser.
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      guarded(navigate)(event);
    });
  }
  window.addEventListener('popstate', () => {
    if (currentUser) showRoute().catch((error) => say(error instanceof Error ? error.message : String(error), 'error'));
  });
  element('more-connections').addEventListener('click', guarded(() => showConnections({ more: true })));
  element('refresh-deliveries').addEventListener('click', guarded(showDeliveries));

  loadSession()
    .catch((error) => say(error instanceof Error ? error.message : String(error), 'error'))
    .finally(() => document.body.setAttribute('data-ready', 'true'));
}

start();
