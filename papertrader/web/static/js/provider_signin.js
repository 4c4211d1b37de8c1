// "Sign in with Google" (any OpenID Connect provider the master offers), in the browser.
//
// The default flow is the authorization code grant with PKCE of a public browser client
// (RFC 6749, RFC 7636; OAuth 2.0 Security BCP, RFC 9700), with OpenID Connect's nonce:
//
// 1. The page asks its worker for the providers (GET_SIGN_IN_OPTIONS: name, issuer,
//    client ids, scopes, web_flow) and reads the provider's discovery document
//    (<issuer>/.well-known/openid-configuration; its `issuer` must be the configured one).
// 2. start(): a fresh state, nonce and PKCE verifier (32 random bytes each) are kept in
//    this tab's sessionStorage, and the tab goes to the provider's authorization endpoint
//    with the S256 code challenge; redirect_uri is this page's origin plus "/".
// 3. The provider sends the tab back to <origin>/?code=...&state=... . takeAnswer() wipes
//    the answer from the address bar before anything else runs; finish() takes the pending
//    sign-in out of sessionStorage (it works once), refuses an answer whose state is not
//    this tab's, and trades the code and the verifier for the ID token at the provider's
//    token endpoint (CORS).
// 4. The page sends (provider, ID token, nonce) with LOGIN_OIDC. The master checks the
//    token (signature, issuer, audience, expiry, this nonce) and spends the nonce, so a
//    token signs in once. The page never looks inside the token: the master decides.
//
// A provider configured with web_flow = "id_token" (Google, whose token endpoint wants a
// web client's secret, which a page cannot keep) is asked for response_type=id_token
// instead: OpenID Connect's ID-token-only response, no access token issued, delivered
// in the fragment (never sent to a server), bound to this tab's nonce and state, and
// spent by the master like any other.
//
// The code flow's token endpoint must be on the issuer's origin: the page's
// Content-Security-Policy lets it connect to the providers' issuer origins and nowhere
// else (web/origins.py).

const PENDING_KEY = "papertrader.provider-signin";
/** How long a started sign-in may take at the provider before its answer is refused. */
const PENDING_MS = 15 * 60 * 1000;

/** The provider flow failed or was refused: the message is for the visitor. */
export class ProviderSignInError extends Error {
  constructor(message) {
    super(message);
    this.name = "ProviderSignInError";
  }
}

export function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** 32 random bytes, base64url: 43 characters (a PKCE verifier's minimum length). */
export function randomToken() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

/** The S256 code challenge of a PKCE verifier (RFC 7636 section 4.2). */
export async function codeChallenge(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** Where the provider sends the visitor back: this page, at the root of its origin. */
export function redirectUri(origin = location.origin) {
  return `${origin}/`;
}

function sameOrigin(a, b) {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

async function discover(option, flow) {
  const issuer = option.issuer.replace(/\/+$/, "");
  let document;
  try {
    const response = await fetch(`${issuer}/.well-known/openid-configuration`, {
      headers: { Accept: "application/json" },
      credentials: "omit",
      cache: "no-cache",
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    document = await response.json();
  } catch (error) {
    throw new ProviderSignInError(`${option.display_name} cannot be reached from this page right now (${error.message}). Try again shortly, or sign in with your password.`);
  }
  if (String(document.issuer ?? "").replace(/\/+$/, "") !== issuer) {
    throw new ProviderSignInError(`${option.display_name}'s published configuration names another issuer: not signing in.`);
  }
  if (typeof document.authorization_endpoint !== "string") {
    throw new ProviderSignInError(`${option.display_name} publishes no authorization endpoint.`);
  }
  const types = document.response_types_supported;
  if (Array.isArray(types) && !types.includes(flow)) {
    throw new ProviderSignInError(`${option.display_name} does not offer the "${flow}" sign-in this server is set up for (web_flow).`);
  }
  if (flow === "code" && (typeof document.token_endpoint !== "string" || !sameOrigin(document.token_endpoint, issuer))) {
    throw new ProviderSignInError(
      `${option.display_name}'s token endpoint is not on the provider's own address, which this page may not reach: ` +
        `the operator can set web_flow = "id_token" for it, or sign in with \`pt client login --with ${option.name}\`.`,
    );
  }
  return document;
}

/** Go to the provider's sign-in page (this tab leaves the page). */
export async function start(option, { remember = false } = {}) {
  if (!globalThis.isSecureContext || !globalThis.crypto?.subtle) {
    // PKCE needs the browser's SHA-256, offered on https:// pages (and on loopback) only.
    throw new ProviderSignInError(`Signing in with ${option.display_name} needs this page on https://: ask the operator to turn TLS on, or sign in with your password.`);
  }
  const flow = option.web_flow === "id_token" ? "id_token" : "code";
  const config = await discover(option, flow);
  const pending = {
    provider: option.name,
    title: option.display_name,
    flow,
    clientId: option.web_client_id || option.client_id,
    // An installed-app secret is public (RFC 8252 8.5); it belongs to client_id only.
    clientSecret: option.web_client_id ? null : option.client_secret ?? null,
    tokenEndpoint: flow === "code" ? config.token_endpoint : null,
    redirectUri: redirectUri(),
    state: randomToken(),
    nonce: randomToken(),
    verifier: randomToken(),
    remember: Boolean(remember),
    startedAt: Date.now(),
  };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(config.authorization_endpoint);
  const query = {
    response_type: flow,
    client_id: pending.clientId,
    redirect_uri: pending.redirectUri,
    scope: option.scopes || "openid email profile",
    state: pending.state,
    nonce: pending.nonce,
  };
  if (flow === "code") {
    query.code_challenge = await codeChallenge(pending.verifier);
    query.code_challenge_method = "S256";
  } else {
    query.response_mode = "fragment";
  }
  for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
  location.assign(url.href);
}

function takePending() {
  const raw = sessionStorage.getItem(PENDING_KEY);
  sessionStorage.removeItem(PENDING_KEY);
  if (raw === null) return null;
  try {
    const pending = JSON.parse(raw);
    return Date.now() - pending.startedAt <= PENDING_MS ? pending : null;
  } catch {
    return null;
  }
}

const ANSWER_KEYS = ["state", "code", "id_token", "error"];

/** The provider's answer in an address: {params, fragment} (the code flow answers in the
 *  query, the id_token flow in the fragment), or null when the page was opened normally. */
export function answerIn(search, hash = "") {
  for (const [text, fragment] of [[search, false], [hash.replace(/^#/, ""), true]]) {
    const query = new URLSearchParams(text);
    if (ANSWER_KEYS.some((key) => query.has(key))) return { params: Object.fromEntries(query.entries()), fragment };
  }
  return null;
}

/** The answer in this page's address, wiped from the address bar (and history) at once. */
export function takeAnswer() {
  const answer = answerIn(location.search, location.hash);
  if (answer !== null) history.replaceState(null, "", answer.fragment ? location.pathname : `${location.pathname}${location.hash}`);
  return answer;
}

/** Finish the sign-in ``answer`` (takeAnswer's) belongs to: {provider, title, idToken,
 *  nonce, remember}, or null for no answer. ProviderSignInError when refused. */
export async function finish(answer) {
  if (answer === null) return null;
  const params = answer.params;
  const pending = takePending();
  if (pending === null || typeof params.state !== "string" || params.state !== pending.state) {
    throw new ProviderSignInError("That sign-in answer does not belong to a sign-in started in this tab (its state does not match), so it was ignored. Start the sign-in again.");
  }
  if (params.error) {
    const detail = params.error === "access_denied" ? "you declined" : params.error_description || params.error;
    throw new ProviderSignInError(`${pending.title} did not sign you in: ${detail}.`);
  }
  const signedIn = { provider: pending.provider, title: pending.title, idToken: null, nonce: pending.nonce, remember: pending.remember };
  if (pending.flow === "id_token") {
    if (!answer.fragment || typeof params.id_token !== "string") throw new ProviderSignInError(`${pending.title} sent no ID token back.`);
    return { ...signedIn, idToken: params.id_token };
  }
  if (!params.code) throw new ProviderSignInError(`${pending.title} sent no authorization code back.`);
  const form = new URLSearchParams({
    grant_type: "authorization_code",
    code: params.code,
    redirect_uri: pending.redirectUri,
    client_id: pending.clientId,
    code_verifier: pending.verifier,
  });
  if (pending.clientSecret) form.set("client_secret", pending.clientSecret);
  let body;
  let status;
  try {
    const response = await fetch(pending.tokenEndpoint, {
      method: "POST",
      body: form,
      headers: { Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
    });
    status = response.status;
    body = await response.json();
  } catch (error) {
    throw new ProviderSignInError(`${pending.title}'s token endpoint did not answer (${error.message}). Start the sign-in again.`);
  }
  if (status !== 200 || typeof body?.id_token !== "string") {
    const detail = body?.error_description || body?.error || `HTTP ${status}`;
    throw new ProviderSignInError(`${pending.title} gave no ID token: ${detail}. Start the sign-in again.`);
  }
  return { ...signedIn, idToken: body.id_token };
}
