// "Sign in with Google" (any OpenID Connect provider the master offers), in the browser.
//
// The flow is the authorization code grant with PKCE of a public browser client (RFC 6749,
// RFC 7636; OAuth 2.0 Security BCP, RFC 9700), with OpenID Connect's nonce:
//
// 1. The page asks its worker for the providers (GET_SIGN_IN_OPTIONS: name, issuer,
//    client id, scopes) and reads the provider's discovery document
//    (<issuer>/.well-known/openid-configuration; its `issuer` must be the configured one).
// 2. start(): a fresh state, nonce and PKCE verifier (32 random bytes each) are kept in
//    this tab's sessionStorage, and the tab goes to the provider's authorization endpoint
//    with the S256 code challenge; redirect_uri is this page's origin plus "/".
// 3. The provider sends the tab back to <origin>/?code=...&state=... . finish() takes the
//    pending sign-in out of sessionStorage (it works once), wipes the query from the
//    address bar, refuses an answer whose state is not this tab's, and trades the code and
//    the verifier for the ID token at the provider's token endpoint (CORS).
// 4. The page sends (provider, ID token, nonce) with LOGIN_OIDC. The master checks the
//    token (signature, issuer, audience, expiry, this nonce) and spends the nonce, so a
//    token signs in once. The page never looks inside the token: the master decides.
//
// The token endpoint must be on the issuer's origin: the page's Content-Security-Policy
// lets it connect to the providers' issuer origins and nowhere else (web/origins.py).

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

async function discover(option) {
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
  for (const key of ["authorization_endpoint", "token_endpoint"]) {
    if (typeof document[key] !== "string") throw new ProviderSignInError(`${option.display_name} publishes no ${key.replace("_", " ")}.`);
  }
  if (!sameOrigin(document.token_endpoint, issuer)) {
    throw new ProviderSignInError(
      `${option.display_name}'s token endpoint is on another address than the provider, which this page may not reach: sign in with \`pt client login --with ${option.name}\`.`,
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
  const config = await discover(option);
  const pending = {
    provider: option.name,
    title: option.display_name,
    clientId: option.client_id,
    clientSecret: option.client_secret ?? null, // an installed-app secret is public (RFC 8252 8.5)
    tokenEndpoint: config.token_endpoint,
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
    response_type: "code",
    client_id: option.client_id,
    redirect_uri: pending.redirectUri,
    scope: option.scopes || "openid email profile",
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await codeChallenge(pending.verifier),
    code_challenge_method: "S256",
  };
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

/** The provider's answer in this page's address, or null when the page was opened normally. */
export function answerIn(search = location.search) {
  const query = new URLSearchParams(search);
  if (!query.has("state") && !query.has("code") && !query.has("error")) return null;
  return Object.fromEntries(query.entries());
}

/** Finish a sign-in the provider sent back: {provider, title, idToken, nonce, remember},
 *  or null when the address holds no answer. ProviderSignInError when refused. */
export async function finish() {
  const answer = answerIn();
  if (answer === null) return null;
  // The code and state leave the address bar (and the history) at once.
  history.replaceState(null, "", `${location.pathname}${location.hash}`);
  const pending = takePending();
  if (pending === null || typeof answer.state !== "string" || answer.state !== pending.state) {
    throw new ProviderSignInError("That sign-in answer does not belong to a sign-in started in this tab (its state does not match), so it was ignored. Start the sign-in again.");
  }
  if (answer.error) {
    const detail = answer.error === "access_denied" ? "you declined" : answer.error_description || answer.error;
    throw new ProviderSignInError(`${pending.title} did not sign you in: ${detail}.`);
  }
  if (!answer.code) throw new ProviderSignInError(`${pending.title} sent no authorization code back.`);
  const form = new URLSearchParams({
    grant_type: "authorization_code",
    code: answer.code,
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
  return {
    provider: pending.provider,
    title: pending.title,
    idToken: body.id_token,
    nonce: pending.nonce,
    remember: pending.remember,
  };
}
