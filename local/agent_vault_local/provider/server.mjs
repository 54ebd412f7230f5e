// The external OAuth 2.0 / OpenID Connect authorization server of Agent Vault's tests, local mode
// and demo: the npm package `oidc-provider` (OpenID Certified), configured here, not reimplemented.
//
// It plays three parts on one loopback origin:
//   * the OAuth provider the vault is a client of (clients `agent-vault`, `agent-vault-post`, and
//     `agent-vault-short`, whose access tokens live SHORT_ACCESS_TOKEN_TTL seconds; and for
//     machine-to-machine credentials `agent-vault-m2m` (client_secret_basic) and
//     `agent-vault-m2m-jwt` (private_key_jwt, RFC 7523), client_credentials only),
//   * the users' identity provider (client `agent-app`, whose ID tokens users present to the vault),
//   * a small protected resource, GET /api/calendar/events (API base URL <issuer>/api), which
//     checks every access token by a real introspection call (client `calendar-api`) and accepts
//     bearer tokens and DPoP-bound tokens (RFC 9449: `Authorization: DPoP` with a proof of the key
//     the token is bound to, checked with `jose`, the JOSE library oidc-provider itself uses).
//
// DPoP (RFC 9449) is on: a token request carrying a `DPoP` proof gets an access token bound to the
// proof's key (`token_type: DPoP`, `cnf.jkt` in introspection). Whether a proof must carry a
// server nonce (`use_dpop_nonce`) is configurable for the token endpoint and the calendar API.
//
// Login and consent are tiny HTML forms of our own (oidc-provider's dev interactions are off).
// Under /__test/ (loopback callers only) are test hooks of THIS provider setup, not of the vault:
// counters, fault injection at the token and revocation endpoints, where DPoP nonces are demanded,
// and an introspection shortcut.
//
// Environment (all optional):
//   PORT                 0 (default) = any free port; the issuer is fixed once the socket listens
//   HOST                 127.0.0.1
//   ISSUER               override the issuer (default http://<HOST>:<port>, 127.0.0.1 for 0.0.0.0)
//   REDIRECT_URIS        comma-separated redirect URIs of agent-vault, agent-vault-post and
//                        agent-vault-public (a public client: no client authentication)
//   APP_REDIRECT_URIS    comma-separated redirect URIs of agent-app (http://127.0.0.1/app/callback)
//   CLIENT_SECRET        secret of agent-vault and agent-vault-post (default: random, never shown)
//   APP_CLIENT_SECRET    secret of agent-app (default: random, never shown)
//   CALENDAR_API_SECRET  secret of calendar-api (default: random, never shown)
//   M2M_CLIENT_JWKS      the public JWK set of agent-vault-m2m-jwt (private_key_jwt); without
//                        it that client is not registered
//   RESOURCE             the resource server's indicator (https://api.agent-vault.test/)
//   ACCESS_TOKEN_TTL     seconds (3600)        ID_TOKEN_TTL       seconds (3600)
//   SHORT_ACCESS_TOKEN_TTL  seconds (20): access tokens of client agent-vault-short (a provider
//                        whose tokens live less than a minute)
//   REFRESH_TOKEN_TTL    seconds (14 days)     ROTATE_REFRESH_TOKEN  1 (default) or 0
//   DPOP_NONCE           comma-separated places that demand a DPoP nonce: `token` (the token
//                        endpoint), `api` (the calendar API); default none. The test hook
//                        POST /__test/dpop changes it at run time.
//   API_KEYS             JSON {"<label>": "<key>", ...}: the keys the keyed API accepts (GET or
//                        POST /api/keyed/events; header X-Api-Key, Authorization: Bearer, or
//                        query api_key); default none. POST /__test/api-keys replaces them.
//   EXIT_WITH_STDIN      1 = exit when stdin reaches end of file (the parent went away)
//   NODE_MODULES_DIR     where to find oidc-provider if not in a node_modules above this file
//
// When listening it prints exactly one line to stdout: READY {"issuer": ..., "port": ...}.
// Nothing else goes to stdout; stderr carries oidc-provider's notices and our errors, never
// tokens, codes or secrets.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = process.env;

// oidc-provider resolves from the node_modules beside or above this file; NODE_MODULES_DIR names
// another node_modules (e.g. when this file is installed inside a Python package). `jose` is the
// one oidc-provider depends on, resolved from oidc-provider's own directory.
function oidcProviderRoot() {
  if (env.NODE_MODULES_DIR) return path.join(env.NODE_MODULES_DIR, 'oidc-provider');
  return path.dirname(createRequire(import.meta.url).resolve('oidc-provider/package.json'));
}

async function loadLibraries() {
  const root = oidcProviderRoot();
  const { main = 'index.js' } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const oidc = await import(pathToFileURL(path.join(root, main)).href);
  const jose = await import(pathToFileURL(createRequire(path.join(root, 'package.json')).resolve('jose')).href);
  return { oidc, jose };
}

const {
  oidc: { default: Provider, errors },
  jose: { EmbeddedJWK, calculateJwkThumbprint, jwtVerify },
} = await loadLibraries();

function list(value, fallback) {
  const items = (value ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return items.length ? items : fallback;
}

function seconds(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer number of seconds`);
  }
  return value;
}

function randomSecret() {
  return crypto.randomBytes(32).toString('base64url');
}

const HOST = env.HOST || '127.0.0.1';
const PORT = Number(env.PORT || 0);
const RESOURCE = env.RESOURCE || 'https://api.agent-vault.test/';
const RESOURCE_SCOPES = 'calendar.read calendar.write mail.read';
const VAULT_REDIRECT_URIS = list(env.REDIRECT_URIS, ['http://127.0.0.1/v1/oauth/callback']);
const APP_REDIRECT_URIS = list(env.APP_REDIRECT_URIS, ['http://127.0.0.1/app/callback']);
const CLIENT_SECRET = env.CLIENT_SECRET || randomSecret();
const APP_CLIENT_SECRET = env.APP_CLIENT_SECRET || randomSecret();
const CALENDAR_API_SECRET = env.CALENDAR_API_SECRET || randomSecret();
const ACCESS_TOKEN_TTL = seconds('ACCESS_TOKEN_TTL', 3600);
const SHORT_ACCESS_TOKEN_TTL = seconds('SHORT_ACCESS_TOKEN_TTL', 20);
const ID_TOKEN_TTL = seconds('ID_TOKEN_TTL', 3600);
const REFRESH_TOKEN_TTL = seconds('REFRESH_TOKEN_TTL', 14 * 24 * 3600);
const M2M_CLIENT_JWKS = env.M2M_CLIENT_JWKS ? JSON.parse(env.M2M_CLIENT_JWKS) : undefined;
const ROTATE_REFRESH_TOKEN = !['0', 'false', 'no'].includes((env.ROTATE_REFRESH_TOKEN || '1').toLowerCase());

const DPOP_NONCE_PLACES = new Set(['token', 'api']);

function nonceDemands(value) {
  const places = list(value, []);
  for (const place of places) {
    if (!DPOP_NONCE_PLACES.has(place)) throw new Error(`DPOP_NONCE: unknown place ${place}`);
  }
  return { token: places.includes('token'), api: places.includes('api') };
}

// Where a DPoP proof must carry a server nonce (env DPOP_NONCE, test hook POST /__test/dpop).
let dpopNonce = nonceDemands(env.DPOP_NONCE);

const SHORT_LIVED_CLIENT = 'agent-vault-short';
const M2M_CLIENT = 'agent-vault-m2m';
const M2M_JWT_CLIENT = 'agent-vault-m2m-jwt';
const VAULT_CLIENTS = new Set(['agent-vault', 'agent-vault-post', 'agent-vault-public', SHORT_LIVED_CLIENT,
  M2M_CLIENT, M2M_JWT_CLIENT]);
const CALENDAR_CLIENT = 'calendar-api';

// The users this provider knows. Test fixtures, not secrets.
const USERS = {
  alice: { password: 'alice-password', email: 'alice@example.test' },
  bob: { password: 'bob-password', email: 'bob@example.test' },
};

// ---------------------------------------------------------------------------------------------
// Test hooks' state: counters and faults.

function freshStats() {
  return {
    token_requests: { authorization_code: 0, refresh_token: 0, client_credentials: 0 },
    token_successes: { authorization_code: 0, refresh_token: 0, client_credentials: 0 },
    grant_errors: [],
    grants_revoked: 0,
    revocations: 0,
    introspections: 0,
    faults_injected: 0,
    dropped_requests: 0,
    lost_answers: 0,
    // calendar API calls: answered 200 by scheme, and refused (401/403) by error
    api_requests: { bearer: 0, dpop: 0 },
    // the keyed API's calls: answered 200, and refused (401) by error
    keyed_requests: 0,
    keyed_refusals: {},
    api_refusals: {},
  };
}

let stats = freshStats();
let faults = {};

const FAULTABLE = { token_endpoint: '/token', revocation_endpoint: '/token/revocation' };

function bump(counter, key) {
  counter[key] = (counter[key] ?? 0) + 1;
}

function parseFaults(body) {
  const parsed = {};
  for (const [name, spec] of Object.entries(body ?? {})) {
    if (!(name in FAULTABLE)) throw new Error(`unknown fault target ${name}`);
    if (spec === null) continue;
    const status = spec.status ?? null;
    const delayMs = spec.delay_ms ?? 0;
    const remaining = spec.remaining ?? 1;
    const loseAnswer = spec.lose_answer ?? false;
    if (typeof loseAnswer !== 'boolean') throw new Error('lose_answer must be a boolean');
    if (loseAnswer && (status !== null || delayMs !== 0)) {
      throw new Error('lose_answer takes no status and no delay');
    }
    if (status !== null && !(Number.isInteger(status) && status >= 400 && status <= 599)) {
      throw new Error('status must be null or an HTTP error status');
    }
    if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > 120000) {
      throw new Error('delay_ms must be an integer between 0 and 120000');
    }
    if (!Number.isInteger(remaining) || remaining < 1) {
      throw new Error('remaining must be a positive integer');
    }
    if (status === null && delayMs === 0 && !loseAnswer) {
      throw new Error('a fault needs a status, a delay or lose_answer');
    }
    parsed[name] = { status, delay_ms: delayMs, remaining, lose_answer: loseAnswer };
  }
  return parsed;
}

function takeFault(path) {
  for (const [name, target] of Object.entries(FAULTABLE)) {
    const fault = faults[name];
    if (fault && target === path) {
      fault.remaining -= 1;
      if (fault.remaining <= 0) delete faults[name];
      return fault;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Small HTTP helpers.

const FORM_LIMIT = 16 * 1024;

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > FORM_LIMIT) throw new errors.InvalidRequest('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, headers = {}) {
  const isJson = typeof body !== 'string';
  const payload = isJson ? JSON.stringify(body) : body;
  res.writeHead(status, {
    'content-type': isJson ? 'application/json; charset=utf-8' : 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1 id="title">${escapeHtml(title)}</h1>
${body}
</main></body></html>`;
}

function isLoopback(req) {
  const address = req.socket.remoteAddress ?? '';
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

// ---------------------------------------------------------------------------------------------
// Storage: an in-memory adapter without eviction. oidc-provider's own quick-start adapter is an LRU
// of about a thousand entries, which a long test session or a benchmark outgrows: tokens would then
// vanish at random. Records here live until they expire (swept once a minute) or are destroyed.

const records = new Map(); // "<Model>:<id>" -> { payload, expiresAt (ms, Infinity if none) }
const grantMembers = new Map(); // grantId -> Set of record keys issued under that grant
const sessionUids = new Map(); // Session uid -> Session id
const userCodes = new Map(); // device flow user code -> id
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

function liveRecord(key) {
  const record = records.get(key);
  if (!record) return undefined;
  if (record.expiresAt <= Date.now()) {
    forget(key, record.payload);
    return undefined;
  }
  return record;
}

function forget(key, payload) {
  records.delete(key);
  if (payload.grantId) grantMembers.get(payload.grantId)?.delete(key);
  const id = key.slice(key.indexOf(':') + 1);
  if (payload.uid && sessionUids.get(payload.uid) === id) sessionUids.delete(payload.uid);
  if (payload.userCode && userCodes.get(payload.userCode) === id) userCodes.delete(payload.userCode);
}

setInterval(() => {
  const now = Date.now();
  for (const [key, record] of records) {
    if (record.expiresAt <= now) forget(key, record.payload);
  }
  for (const [grantId, members] of grantMembers) {
    if (members.size === 0) grantMembers.delete(grantId);
  }
}, 60_000).unref();

class MemoryStore {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const previous = records.get(key);
    if (previous) forget(key, previous.payload);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    records.set(key, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    return id === undefined ? undefined : liveRecord(this.key(id))?.payload;
  }

  async findByUid(uid) {
    return this.find(sessionUids.get(uid));
  }

  async findByUserCode(userCode) {
    return this.find(userCodes.get(userCode));
  }

  async consume(id) {
    const record = liveRecord(this.key(id));
    if (record) record.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = this.key(id);
    const record = records.get(key);
    if (record) forget(key, record.payload);
  }

  async revokeByGrantId(grantId) {
    const prefix = this.key('');
    for (const key of [...(grantMembers.get(grantId) ?? [])]) {
      const record = key.startsWith(prefix) ? records.get(key) : undefined;
      if (record) forget(key, record.payload);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The provider.

function signingKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rs-${crypto.randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' },
    { ...ec, kid: `es-${crypto.randomBytes(6).toString('hex')}`, alg: 'ES256', use: 'sig' },
  ];
}

function resourceServerInfo(client) {
  return {
    scope: RESOURCE_SCOPES,
    audience: RESOURCE,
    accessTokenTTL: client?.clientId === SHORT_LIVED_CLIENT ? SHORT_ACCESS_TOKEN_TTL : ACCESS_TOKEN_TTL,
    accessTokenFormat: 'opaque',
  };
}

function buildProvider(issuer) {
  const vaultClient = {
    client_secret: CLIENT_SECRET,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: VAULT_REDIRECT_URIS,
  };

  const configuration = {
    adapter: MemoryStore,
    clients: [
      { ...vaultClient, client_id: 'agent-vault', token_endpoint_auth_method: 'client_secret_basic' },
      { ...vaultClient, client_id: 'agent-vault-post', token_endpoint_auth_method: 'client_secret_post' },
      { ...vaultClient, client_id: SHORT_LIVED_CLIENT, token_endpoint_auth_method: 'client_secret_basic' },
      // A public client (PKCE only, no client authentication): what a vault configured with
      // client_auth_method "none" is at this provider (the mix-up tests use it).
      {
        client_id: 'agent-vault-public',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: VAULT_REDIRECT_URIS,
        token_endpoint_auth_method: 'none',
      },
      {
        client_id: 'agent-app',
        client_secret: APP_CLIENT_SECRET,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: APP_REDIRECT_URIS,
        token_endpoint_auth_method: 'client_secret_basic',
      },
      // Machine-to-machine: the vault's own credentials (no user), client_credentials only; the
      // calendar API (the default resource) grants only its own scopes.
      {
        client_id: M2M_CLIENT,
        client_secret: CLIENT_SECRET,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      ...(M2M_CLIENT_JWKS ? [{
        client_id: M2M_JWT_CLIENT,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'ES256',
        jwks: M2M_CLIENT_JWKS,
      }] : []),
      {
        // The resource server: it only authenticates to call introspection.
        client_id: CALENDAR_CLIENT,
        client_secret: CALENDAR_API_SECRET,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: signingKeys() },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    responseTypes: ['code'],
    scopes: ['openid', 'offline_access', 'email'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    // oidc-provider 9 implements S256 only; we additionally require PKCE from every client.
    pkce: { required: () => true },
    rotateRefreshToken: ROTATE_REFRESH_TOKEN,
    clientBasedCORS: () => false,
    async findAccount(_ctx, sub) {
      const user = Object.hasOwn(USERS, sub) ? USERS[sub] : undefined;
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, email: user.email, email_verified: true };
        },
      };
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Authorization error', `<p id="error" class="error">${escapeHtml(out.error)}: ${escapeHtml(out.error_description ?? '')}</p>`);
    },
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? ACCESS_TOKEN_TTL,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: ID_TOKEN_TTL,
      RefreshToken: REFRESH_TOKEN_TTL,
      Grant: REFRESH_TOKEN_TTL,
      Session: 24 * 3600,
      Interaction: 600,
    },
    features: {
      devInteractions: { enabled: false },
      // RFC 6749 §4.4: the machine clients' tokens (a resource indicator picks the calendar API).
      clientCredentials: { enabled: true },
      // RFC 9449. A refresh (or code) request with a `DPoP` proof gets an access token bound to
      // the proof's key; a confidential client may present a new key at each refresh (§5).
      dPoP: {
        enabled: true,
        nonceSecret: crypto.randomBytes(32),
        requireNonce: () => dpopNonce.token,
      },
      revocation: {
        enabled: true,
        // A client may revoke only the tokens issued to it (RFC 7009 §2.1).
        async allowedPolicy(_ctx, client, token) {
          if (token.clientId !== client.clientId) {
            throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      introspection: {
        enabled: true,
        // The resource server may introspect access tokens meant for it; any other client only
        // the tokens issued to itself. Anything else reads as {"active": false}.
        async allowedPolicy(_ctx, client, token) {
          if (client.clientId === CALENDAR_CLIENT) {
            const audience = [].concat(token.aud ?? []);
            return ['AccessToken', 'ClientCredentials'].includes(token.kind) && audience.includes(RESOURCE);
          }
          return token.clientId === client.clientId;
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource(_ctx, client, oneOf) {
          if (oneOf) return oneOf;
          return VAULT_CLIENTS.has(client.clientId) ? RESOURCE : undefined;
        },
        async getResourceServerInfo(_ctx, indicator, client) {
          if (indicator !== RESOURCE || client.clientId === CALENDAR_CLIENT) {
            throw new errors.InvalidTarget();
          }
          return resourceServerInfo(client);
        },
        useGrantedResource: () => true,
      },
    },
  };

  const provider = new Provider(issuer, configuration);

  provider.on('grant.success', (ctx) => {
    bump(stats.token_successes, ctx.oidc.params?.grant_type ?? 'unknown');
  });
  provider.on('grant.error', (ctx, err) => {
    stats.grant_errors.push({
      grant_type: ctx.oidc?.params?.grant_type ?? null,
      error: err.error ?? 'server_error',
      error_description: err.error_description ?? null,
    });
    if (stats.grant_errors.length > 50) stats.grant_errors.shift();
  });
  provider.on('grant.revoked', () => {
    stats.grants_revoked += 1;
  });
  provider.on('server_error', (_ctx, err) => {
    process.stderr.write(`server_error: ${err?.name ?? 'Error'}: ${err?.message ?? ''}\n`);
  });

  // Runs before oidc-provider's routes: counts endpoint calls and injects the configured faults.
  provider.use(async (ctx, next) => {
    const { path, method } = ctx;
    if (method === 'POST' && path === '/token') {
      const fault = takeFault(path);
      if (fault) {
        // Read the form ourselves: the request never reaches oidc-provider unless it only stalls.
        await applyFault(ctx, fault, next);
        return;
      }
      await next();
      bump(stats.token_requests, ctx.oidc?.params?.grant_type ?? 'unknown');
      return;
    }
    if (method === 'POST' && path === '/token/revocation') {
      const fault = takeFault(path);
      if (fault) {
        await applyFault(ctx, fault, next);
        return;
      }
      await next();
      if (ctx.status === 200) stats.revocations += 1;
      return;
    }
    await next();
    if (method === 'POST' && path === '/token/introspection' && ctx.status === 200) {
      stats.introspections += 1;
    }
  });

  return provider;
}

// A fault with a status answers that status (after the delay, if any) without reaching
// oidc-provider, so no code or refresh token is consumed. A pure delay stalls the request and then
// lets oidc-provider handle it, unless the caller gave up meanwhile: then it is dropped unprocessed.
// lose_answer lets oidc-provider process the request (a refresh token is rotated, a code spent)
// and then closes the connection without answering: the caller never learns the outcome.
async function applyFault(ctx, fault, next) {
  stats.faults_injected += 1;
  if (fault.lose_answer) {
    await next();
    if (ctx.path === '/token') bump(stats.token_requests, ctx.oidc?.params?.grant_type ?? 'unknown');
    if (ctx.path === '/token/revocation' && ctx.status === 200) stats.revocations += 1;
    stats.lost_answers += 1;
    ctx.respond = false;
    ctx.req.socket.destroy();
    return;
  }
  if (fault.status !== null && ctx.path === '/token') {
    const form = new URLSearchParams(await readBody(ctx.req).catch(() => ''));
    bump(stats.token_requests, form.get('grant_type') ?? 'unknown');
  }
  if (fault.delay_ms > 0) {
    const { socket } = ctx.req;
    await new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        socket.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, fault.delay_ms);
      socket.once('close', done);
    });
    if (socket.destroyed) {
      stats.dropped_requests += 1;
      ctx.respond = false;
      return;
    }
  }
  if (fault.status === null) {
    await next();
    if (ctx.path === '/token') bump(stats.token_requests, ctx.oidc?.params?.grant_type ?? 'unknown');
    if (ctx.path === '/token/revocation' && ctx.status === 200) stats.revocations += 1;
    return;
  }
  ctx.status = fault.status;
  ctx.set('cache-control', 'no-store');
  ctx.body = { error: 'temporarily_unavailable', error_description: 'injected fault' };
}

// ---------------------------------------------------------------------------------------------
// Login and consent: our own minimal interaction pages over oidc-provider's interaction API.

function loginPage(uid, details, error) {
  const client = escapeHtml(details.params.client_id);
  const message = error ? `<p id="error" class="error" role="alert">${escapeHtml(error)}</p>` : '';
  return page('Sign in', `<p id="client">to continue to <strong>${client}</strong></p>
${message}
<form id="login-form" method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label for="login">Username</label> <input id="login" name="login" autocomplete="username" required>
  <label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password" required>
  <button id="sign-in" type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, details) {
  const { missingOIDCScope = [], missingResourceScopes = {} } = details.prompt.details;
  const requested = (details.params.scope ?? '').split(' ').filter(Boolean);
  const items = requested.map((s) => `<li class="scope">${escapeHtml(s)}</li>`).join('');
  const resources = Object.keys(missingResourceScopes)
    .map((r) => `<li class="resource">${escapeHtml(r)}</li>`).join('');
  return page('Authorize access', `<p id="client"><strong>${escapeHtml(details.params.client_id)}</strong>
asks for access as <strong id="account">${escapeHtml(details.session?.accountId ?? '')}</strong>:</p>
<ul id="scopes">${items}</ul>
${resources ? `<p>at</p><ul id="resources">${resources}</ul>` : ''}
<p id="new-scopes" hidden>${escapeHtml(missingOIDCScope.join(' '))}</p>
<form id="consent-form" method="post" action="/interaction/${escapeHtml(uid)}/confirm">
  <button id="allow" type="submit" name="decision" value="allow">Allow</button>
  <button id="deny" type="submit" name="decision" value="deny">Deny</button>
</form>`);
}

async function interactionRoute(provider, req, res, url) {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/confirm)?$/.exec(url.pathname);
  if (!match) {
    send(res, 404, page('Not found', '<p id="error">no such page</p>'));
    return;
  }
  const [, uid, action] = match;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    if (err instanceof errors.SessionNotFound) {
      send(res, 400, page('Sign-in expired', '<p id="error" class="error">This sign-in request expired or is unknown. Start again.</p>'));
      return;
    }
    throw err;
  }
  if (details.uid !== uid) {
    send(res, 400, page('Sign-in mismatch', '<p id="error" class="error">This page belongs to another sign-in request.</p>'));
    return;
  }
  const promptName = details.prompt.name;

  if (req.method === 'GET' && !action) {
    if (promptName === 'login') send(res, 200, loginPage(uid, details));
    else if (promptName === 'consent') send(res, 200, consentPage(uid, details));
    else send(res, 400, page('Unsupported', '<p id="error">unsupported interaction</p>'));
    return;
  }
  if (req.method !== 'POST' || !action) {
    send(res, 405, page('Method not allowed', '<p id="error">method not allowed</p>'));
    return;
  }

  const form = new URLSearchParams(await readBody(req));
  if (action === '/login') {
    if (promptName !== 'login') {
      send(res, 400, page('Unexpected', '<p id="error" class="error">not a login step</p>'));
      return;
    }
    const login = form.get('login') ?? '';
    const user = Object.hasOwn(USERS, login) ? USERS[login] : undefined;
    const given = Buffer.from(form.get('password') ?? '');
    const expected = Buffer.from(user?.password ?? '');
    const ok = user && given.length === expected.length && crypto.timingSafeEqual(given, expected);
    if (!ok) {
      send(res, 200, loginPage(uid, details, 'Invalid username or password.'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    return;
  }

  // action === '/confirm'
  if (promptName !== 'consent') {
    send(res, 400, page('Unexpected', '<p id="error" class="error">not a consent step</p>'));
    return;
  }
  const decision = form.get('decision');
  if (decision === 'deny') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'The user denied the request.',
    }, { mergeWithLastSubmission: false });
    return;
  }
  if (decision !== 'allow') {
    send(res, 400, page('Unexpected', '<p id="error" class="error">decision must be allow or deny</p>'));
    return;
  }
  const {
    missingOIDCScope = [], missingOIDCClaims = [], missingResourceScopes = {},
  } = details.prompt.details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  if (missingOIDCScope.length) grant.addOIDCScope(missingOIDCScope.join(' '));
  if (missingOIDCClaims.length) grant.addOIDCClaims(missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

// ---------------------------------------------------------------------------------------------
// The protected resource: checks every token by a real introspection call, and every DPoP-bound
// token's proof (RFC 9449 §7) with jose.

const CALENDAR_PATH = '/api/calendar/events';
const REALM = 'realm="calendar"';
// The algorithms oidc-provider accepts for DPoP proofs by default (its dPoPSigningAlgValues).
const DPOP_ALGS = ['ES256', 'Ed25519', 'EdDSA'];
// How far a proof's iat may be from now without a nonce (oidc-provider's own window).
const PROOF_WINDOW_SECONDS = 300;
const API_NONCE_TTL_MS = 5 * 60_000;

const apiNonces = new Map(); // nonce -> expiresAt (ms)
const seenProofs = new Map(); // "<jkt>:<jti>" -> expiresAt (ms): a proof is accepted once

setInterval(() => {
  const now = Date.now();
  for (const cache of [apiNonces, seenProofs]) {
    for (const [key, expiresAt] of cache) if (expiresAt <= now) cache.delete(key);
  }
}, 60_000).unref();

function newApiNonce() {
  const nonce = crypto.randomBytes(24).toString('base64url');
  apiNonces.set(nonce, Date.now() + API_NONCE_TTL_MS);
  return nonce;
}

function validApiNonce(nonce) {
  const expiresAt = typeof nonce === 'string' ? apiNonces.get(nonce) : undefined;
  return expiresAt !== undefined && expiresAt > Date.now();
}

// A refusal of the calendar API: the challenge names the scheme the client used (a bearer client
// learns nothing of DPoP unless its token is DPoP-bound), plus a DPoP-Nonce when one is demanded.
class Refusal extends Error {
  constructor(status, scheme, error, description, { nonce, scope } = {}) {
    super(description);
    this.status = status;
    this.scheme = scheme;
    this.error = error;
    this.nonce = nonce;
    this.scope = scope;
  }

  send(res) {
    const params = this.scheme === 'DPoP' ? [`algs="${DPOP_ALGS.join(' ')}"`] : [REALM];
    if (this.error) params.push(`error="${this.error}"`);
    if (this.scope) params.push(`scope="${this.scope}"`);
    const challenges = [`${this.scheme} ${params.join(', ')}`];
    if (!this.error) challenges.push(`DPoP algs="${DPOP_ALGS.join(' ')}"`); // no credentials: offer both
    const headers = { 'www-authenticate': challenges };
    if (this.nonce) headers['dpop-nonce'] = this.nonce;
    const body = { error: this.error ?? 'invalid_request', error_description: this.message };
    if (this.scope) body.scope = this.scope;
    bump(stats.api_refusals, body.error);
    send(res, this.status, body, headers);
  }
}

const invalidProof = (description) => new Refusal(401, 'DPoP', 'invalid_dpop_proof', description);

// RFC 9449 §4.3 and §7.1: the proof of a request that presents `token` with the DPoP scheme.
// Returns the thumbprint of the proof's key; the caller compares it with the token's cnf.jkt.
async function checkProof(req, htu, token) {
  const proofs = req.headersDistinct.dpop ?? [];
  if (proofs.length !== 1) {
    throw invalidProof(proofs.length ? 'exactly one DPoP proof, please' : 'a DPoP proof is required');
  }
  let verified;
  try {
    verified = await jwtVerify(proofs[0], EmbeddedJWK, { typ: 'dpop+jwt', algorithms: DPOP_ALGS });
  } catch {
    throw invalidProof('the DPoP proof does not verify');
  }
  const { payload, protectedHeader } = verified;
  if (typeof payload.jti !== 'string' || !payload.jti || payload.jti.length > 256) {
    throw invalidProof('the DPoP proof needs a jti');
  }
  if (typeof payload.iat !== 'number') throw invalidProof('the DPoP proof needs an iat');
  if (payload.htm !== req.method) throw invalidProof('the DPoP proof is for another method (htm)');
  const claimed = typeof payload.htu === 'string' ? URL.parse(payload.htu) : null;
  if (claimed) {
    claimed.search = '';
    claimed.hash = '';
  }
  if (!claimed || claimed.href !== htu) throw invalidProof('the DPoP proof is for another URL (htu)');
  const ath = crypto.createHash('sha256').update(token).digest('base64url');
  if (payload.ath !== ath) throw invalidProof('the DPoP proof is for another access token (ath)');
  if (Math.abs(Date.now() / 1000 - payload.iat) > PROOF_WINDOW_SECONDS) {
    throw invalidProof('the DPoP proof is too old or from the future (iat)');
  }
  // a nonce is checked when one is demanded, and whenever the proof carries one
  if ((dpopNonce.api || payload.nonce !== undefined) && !validApiNonce(payload.nonce)) {
    throw new Refusal(401, 'DPoP', 'use_dpop_nonce', 'the DPoP proof must carry the nonce of DPoP-Nonce', {
      nonce: newApiNonce(),
    });
  }
  const jkt = await calculateJwkThumbprint(protectedHeader.jwk, 'sha256');
  const replayKey = `${jkt}:${payload.jti}`;
  if (seenProofs.has(replayKey)) throw invalidProof('the DPoP proof was used before (jti)');
  seenProofs.set(replayKey, Date.now() + 2 * PROOF_WINDOW_SECONDS * 1000 + API_NONCE_TTL_MS);
  return jkt;
}

async function introspect(issuer, token) {
  const response = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${CALENDAR_CLIENT}:${CALENDAR_API_SECRET}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    },
    body: new URLSearchParams({ token }).toString(),
  });
  if (response.status !== 200) throw new Error(`introspection answered ${response.status}`);
  return response.json();
}

function todaysEvents() {
  const day = new Date().toISOString().slice(0, 10);
  return [
    { id: 'evt-1', title: 'Team stand-up', start: `${day}T09:00:00Z`, end: `${day}T09:15:00Z` },
    { id: 'evt-2', title: 'Quarterly planning', start: `${day}T14:00:00Z`, end: `${day}T15:00:00Z` },
  ];
}

// The access token's claims once the request proved it may use it: a bearer token as such, a
// DPoP-bound one only with the DPoP scheme and a proof by the key it is bound to (§7.1, §7.2).
async function authorizeCall(issuer, req) {
  const credentials = /^(Bearer|DPoP) ([\x21-\x7e]+)$/i.exec(req.headers.authorization ?? '');
  if (!credentials) {
    throw new Refusal(401, 'Bearer', undefined, 'a bearer or DPoP access token is required');
  }
  const scheme = credentials[1].toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer';
  const token = credentials[2];
  const jkt = scheme === 'DPoP' ? await checkProof(req, new URL(`${issuer}${CALENDAR_PATH}`).href, token) : undefined;
  const info = await introspect(issuer, token);
  const audience = [].concat(info.aud ?? []);
  if (!info.active || !audience.includes(RESOURCE)) {
    throw new Refusal(401, scheme, 'invalid_token', 'the access token is not active');
  }
  const boundTo = info.cnf?.jkt;
  if (boundTo && scheme === 'Bearer') {
    // a DPoP-bound token presented as a bearer token: whoever sends it lacks the key (§7.2)
    throw new Refusal(401, 'DPoP', 'invalid_token', 'this access token is DPoP-bound: use the DPoP scheme with a proof of its key');
  }
  if (scheme === 'DPoP' && !boundTo) {
    throw new Refusal(401, 'DPoP', 'invalid_token', 'this access token is not DPoP-bound');
  }
  if (scheme === 'DPoP' && boundTo !== jkt) {
    throw new Refusal(401, 'DPoP', 'invalid_token', 'invalid DPoP key binding: the proof is signed by another key');
  }
  return { info, scheme };
}

async function calendarRoute(issuer, req, res) {
  if (req.method !== 'GET') {
    send(res, 405, { error: 'method_not_allowed' }, { allow: 'GET' });
    return;
  }
  let info;
  let scheme;
  try {
    ({ info, scheme } = await authorizeCall(issuer, req));
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    err.send(res);
    return;
  }
  const scopes = (info.scope ?? '').split(' ');
  if (!scopes.includes('calendar.read')) {
    new Refusal(403, scheme, 'insufficient_scope', 'calendar.read is required', { scope: 'calendar.read' }).send(res);
    return;
  }
  bump(stats.api_requests, scheme.toLowerCase());
  send(res, 200, { events: todaysEvents(), user: info.sub, client_id: info.client_id });
}

// ---------------------------------------------------------------------------------------------
// The keyed API: a resource that takes a static API key (Agent Vault's API-key providers, flow
// 12), in a header or a query parameter. It answers which configured key (by label) it got,
// never the key.

const KEYED_PATH = '/api/keyed/events';
let apiKeys = parseApiKeys(env.API_KEYS ? JSON.parse(env.API_KEYS) : {});

function parseApiKeys(value) {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error('expected {"<label>": "<key>", ...}');
  }
  const keys = new Map();
  for (const [label, key] of Object.entries(value)) {
    if (typeof key !== 'string' || key.length === 0) throw new Error(`key ${label} must be a non-empty string`);
    keys.set(key, label);
  }
  return keys;
}

function keyedRoute(req, res, url) {
  if (req.method !== 'GET' && req.method !== 'POST') {
    send(res, 405, { error: 'method_not_allowed' }, { allow: 'GET, POST' });
    return;
  }
  const given = [];
  if (req.headers['x-api-key'] !== undefined) given.push(['header', req.headers['x-api-key']]);
  const bearer = /^Bearer ([\x21-\x7e]+)$/.exec(req.headers.authorization ?? '');
  if (bearer) given.push(['authorization', bearer[1]]);
  for (const value of url.searchParams.getAll('api_key')) given.push(['query', value]);
  if (given.length !== 1 || !apiKeys.has(given[0][1])) {
    bump(stats.keyed_refusals, given.length > 1 ? 'api_key_twice' : 'invalid_api_key');
    send(res, 401, { error: given.length > 1 ? 'api_key_twice' : 'invalid_api_key' });
    return;
  }
  stats.keyed_requests += 1;
  send(res, 200, { events: todaysEvents(), key: apiKeys.get(given[0][1]), via: given[0][0] });
}

// ---------------------------------------------------------------------------------------------
// Test hooks (loopback callers only).

async function testRoute(issuer, req, res, url) {
  if (!isLoopback(req)) {
    send(res, 404, { error: 'not_found' });
    return;
  }
  const route = `${req.method} ${url.pathname}`;
  if (route === 'GET /__test/stats') {
    send(res, 200, stats);
  } else if (route === 'POST /__test/stats/reset') {
    stats = freshStats();
    send(res, 200, stats);
  } else if (route === 'GET /__test/faults') {
    send(res, 200, faults);
  } else if (route === 'POST /__test/faults') {
    let body;
    try {
      const text = await readBody(req);
      body = text ? JSON.parse(text) : {};
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('expected a JSON object');
      faults = parseFaults(body);
    } catch (err) {
      send(res, 400, { error: 'invalid_request', error_description: String(err.message) });
      return;
    }
    send(res, 200, faults);
  } else if (route === 'GET /__test/dpop') {
    send(res, 200, { require_nonce: dpopNonce });
  } else if (route === 'POST /__test/dpop') {
    try {
      const text = await readBody(req);
      const body = text ? JSON.parse(text) : {};
      const demand = body?.require_nonce;
      if (typeof demand !== 'object' || demand === null || Array.isArray(demand)) {
        throw new Error('expected {"require_nonce": {"token": bool, "api": bool}}');
      }
      const next = { ...dpopNonce };
      for (const [place, value] of Object.entries(demand)) {
        if (!DPOP_NONCE_PLACES.has(place) || typeof value !== 'boolean') {
          throw new Error(`require_nonce.${place} must be a boolean of token or api`);
        }
        next[place] = value;
      }
      dpopNonce = next;
    } catch (err) {
      send(res, 400, { error: 'invalid_request', error_description: String(err.message) });
      return;
    }
    send(res, 200, { require_nonce: dpopNonce });
  } else if (route === 'POST /__test/api-keys') {
    try {
      const text = await readBody(req);
      apiKeys = parseApiKeys((text ? JSON.parse(text) : {})?.keys);
    } catch (err) {
      send(res, 400, { error: 'invalid_request', error_description: String(err.message) });
      return;
    }
    send(res, 200, { labels: [...apiKeys.values()] });
  } else if (route === 'GET /__test/introspect') {
    const token = url.searchParams.get('token');
    if (!token) {
      send(res, 400, { error: 'invalid_request', error_description: 'token is required' });
      return;
    }
    send(res, 200, await introspect(issuer, token));
  } else {
    send(res, 404, { error: 'not_found' });
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server: listen first (PORT=0 works), then build the provider for the known issuer.

let provider;
let issuer;
let providerCallback;

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://placeholder');
  let work;
  if (url.pathname.startsWith('/__test/')) work = testRoute(issuer, req, res, url);
  else if (url.pathname.startsWith('/interaction/')) work = interactionRoute(provider, req, res, url);
  else if (url.pathname === CALENDAR_PATH) work = calendarRoute(issuer, req, res);
  else if (url.pathname === KEYED_PATH) work = Promise.resolve().then(() => keyedRoute(req, res, url));
  else {
    providerCallback(req, res);
    return;
  }
  work.catch((err) => {
    process.stderr.write(`error on ${req.method} ${url.pathname}: ${err?.name ?? 'Error'}: ${err?.message ?? ''}\n`);
    if (!res.headersSent) send(res, 500, { error: 'server_error' });
    else res.destroy();
  });
});

server.keepAliveTimeout = 5000;

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const host = ['0.0.0.0', '::'].includes(HOST) ? '127.0.0.1' : HOST;
  issuer = env.ISSUER || `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  provider = buildProvider(issuer);
  providerCallback = provider.callback();
  process.stdout.write(`READY ${JSON.stringify({ issuer, port })}\n`);
});

server.on('error', (err) => {
  process.stderr.write(`cannot listen: ${err.message}\n`);
  process.exit(1);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (env.EXIT_WITH_STDIN === '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}
