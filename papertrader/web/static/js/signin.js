// The sign-in screen: signing in with a password, registering, signing in with a provider
// (provider_signin.js runs the flow; a new account chooses its username, an existing one is
// offered the link only after its password), and signing out.

import { ClientError } from "./client.js";
import { $, busy, explain, notice, show } from "./page.js";
import { ErrorCode } from "./protocol/index.js";
import * as providerSignIn from "./provider_signin.js";

export class SignInScreen {
  /** ``app``: ``route()``, which shows the screen the address names. */
  constructor(trader, app) {
    this.trader = trader;
    this.app = app;
    this.providers = null; // the sign-in providers, once a worker has told them
    // A provider sign-in waiting for its new account's username (USERNAME_NEEDED).
    this.unnamed = null;
    // A provider sign-in that may be linked once its account's owner signs in (LINK_REQUIRED).
    this.linkable = null;
    $("signin-form").addEventListener("submit", (event) => this.#signIn(event));
    $("register-form").addEventListener("submit", (event) => this.#register(event));
    $("provider-username-form").addEventListener("submit", (event) => this.#chooseUsername(event));
    $("provider-username-cancel").addEventListener("click", () => {
      this.#hideUsernameForm();
      show($("provider-result"), "Canceled: no account was made.");
    });
    $("link-offer-accept").addEventListener("click", () => this.#acceptLink());
    $("link-offer-decline").addEventListener("click", () => this.#closeLinkOffer());
    $("signout").addEventListener("click", () => this.#signOut());
  }

  async #signIn(event) {
    event.preventDefault();
    const result = $("signin-result");
    const username = $("signin-username").value.trim();
    const password = $("signin-password").value;
    if (!username || !password) return show(result, "Type your username and password.", "bad");
    await busy($("signin-submit"), async () => {
      try {
        await this.trader.login(username, password, $("signin-remember").checked);
        $("signin-password").value = "";
        show(result, "");
        show($("provider-result"), "");
        location.hash = "#/watchlist";
        this.app.route();
        this.#offerLink();
      } catch (error) {
        show(result, explain(error), "bad");
        $("signin-password").focus();
      }
    });
  }

  /** Ask for the providers until a worker has answered (the sign-in screen asks again). */
  async loadProviders() {
    if (this.providers !== null) return;
    try {
      this.#showProviders(await this.trader.signInOptions());
    } catch {
      // no worker answered: password sign-in only for now, as the notice says
    }
  }

  #showProviders(options) {
    this.providers = options;
    $("provider-buttons").replaceChildren(
      ...options.map((option) => {
        const button = document.createElement("button");
        button.type = "button";
        button.id = `provider-${option.name}`;
        button.textContent = `Sign in with ${option.display_name}`;
        button.addEventListener("click", () => this.#startProvider(option, button));
        return button;
      }),
    );
    $("providers").hidden = options.length === 0;
  }

  async #startProvider(option, button) {
    show($("provider-result"), `Going to ${option.display_name}…`);
    await busy(button, async () => {
      try {
        await providerSignIn.start(option, { remember: $("signin-remember").checked });
      } catch (error) {
        show($("provider-result"), error.message, "bad");
      }
    });
  }

  /** After the provider sent the visitor back: finish the flow and sign in with its token. */
  async finishProvider(answer) {
    let signedIn;
    try {
      signedIn = await providerSignIn.finish(answer);
    } catch (error) {
      if (!(error instanceof providerSignIn.ProviderSignInError)) throw error;
      show($("provider-result"), error.message, "bad");
      return;
    }
    if (signedIn !== null) await this.#providerLogin(signedIn, "");
  }

  async #providerLogin(signedIn, username) {
    const result = username ? $("provider-username-result") : $("provider-result");
    try {
      await this.trader.loginWithProvider(signedIn.provider, signedIn.idToken, signedIn.nonce, signedIn.remember, username);
    } catch (error) {
      if (!(error instanceof ClientError)) return show(result, explain(error), "bad");
      if (error.code === ErrorCode.USERNAME_NEEDED || (username && error.code === ErrorCode.USERNAME_TAKEN) || (username && error.code === ErrorCode.INVALID_USERNAME)) {
        return this.#askUsername(signedIn, username ? explain(error) : "");
      }
      this.#hideUsernameForm();
      if (error.code === ErrorCode.LINK_REQUIRED) {
        // Never linked silently: the account's owner signs in with its password first.
        this.linkable = signedIn;
        show(
          $("provider-result"),
          `An account with your ${signedIn.title} e-mail address already exists. If it is yours, sign in to it with its password above: ` +
            `you will then be asked whether to link ${signedIn.title} to it. Nothing is linked without the password.`,
          "bad",
        );
        $("signin-username").focus();
        return;
      }
      return show($("provider-result"), explain(error), "bad");
    }
    this.#hideUsernameForm();
    this.linkable = null;
    show($("provider-result"), "");
    location.hash = "#/watchlist";
    this.app.route();
  }

  #askUsername(signedIn, problem) {
    this.unnamed = signedIn;
    $("provider-username-intro").textContent =
      `This is your first sign-in with ${signedIn.title}: choose the username of your new PaperTrader account.`;
    show($("provider-username-result"), problem, problem ? "bad" : "");
    $("provider-username-form").hidden = false;
    $("provider-username").focus();
  }

  #hideUsernameForm() {
    this.unnamed = null;
    $("provider-username-form").hidden = true;
  }

  async #chooseUsername(event) {
    event.preventDefault();
    const username = $("provider-username").value.trim();
    if (!username) return show($("provider-username-result"), "Type the username you want.", "bad");
    if (this.unnamed === null) return this.#hideUsernameForm();
    await busy($("provider-username-submit"), () => this.#providerLogin(this.unnamed, username));
  }

  #offerLink() {
    const linkable = this.linkable;
    $("link-offer").hidden = linkable === null;
    if (linkable === null) return;
    $("link-offer-title").textContent = `Link ${linkable.title} to ${this.trader.session.username}?`;
    $("link-offer-text").textContent =
      `You came here with a ${linkable.title} sign-in. Link it to ${this.trader.session.username}, ` +
      `and "Sign in with ${linkable.title}" opens this account from now on.`;
    show($("link-offer-result"), "");
    $("link-offer-accept").hidden = false;
    $("link-offer-decline").textContent = "Not now";
    $("link-offer-title").focus();
  }

  async #acceptLink() {
    const linkable = this.linkable;
    if (linkable === null) return;
    await busy($("link-offer-accept"), async () => {
      try {
        const said = await this.trader.linkProvider(linkable.provider, linkable.idToken, linkable.nonce);
        show($("link-offer-result"), `${said.charAt(0).toUpperCase()}${said.slice(1)}.`, "ok");
      } catch (error) {
        show($("link-offer-result"), explain(error), "bad");
      }
    });
    this.linkable = null;
    $("link-offer-accept").hidden = true;
    $("link-offer-decline").textContent = "Close";
  }

  #closeLinkOffer() {
    this.linkable = null;
    $("link-offer").hidden = true;
  }

  async #register(event) {
    event.preventDefault();
    const result = $("register-result");
    const username = $("register-username").value.trim();
    const email = $("register-email").value.trim();
    const password = $("register-password").value;
    if (!username || !email || !password) return show(result, "Fill in the username, e-mail address and password.", "bad");
    await busy($("register-submit"), async () => {
      try {
        const name = await this.trader.register(username, email, password);
        show(result, `Welcome, ${name}: your account is ready. Signing you in…`, "ok");
        await this.trader.login(name, password, false);
        $("register-password").value = "";
        location.hash = "#/watchlist";
        this.app.route();
      } catch (error) {
        show(result, explain(error), "bad");
      }
    });
  }

  async #signOut() {
    this.#closeLinkOffer();
    try {
      await this.trader.logout();
    } catch (error) {
      notice(explain(error));
    }
    location.hash = "#/";
    this.app.route();
  }
}
