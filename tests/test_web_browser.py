"""The website client in a real headless Chromium, against a real ``pt up`` stack.

One stack (two workers) and one Chromium serve every test of this module, in
order, as one visitor would: register, sign in, read quotes, buy, see the
fill and the portfolio change, sell, see the history, reload and stay signed
in, be refused cleanly (a wrong password, an unknown symbol), join a class
competition by its code and see its leaderboard, sign in with
an OpenID Connect provider (the test provider of ``oidc_provider.py``: a
first sign-in chooses a username; an account with the same e-mail address is
linked only after its password), and keep trading when the worker serving
the page is booted off (``pt workers boot``): the page moves to the other
worker with the same session.

Along the way: every control is labelled, the watchlist refreshes by
itself, the chart shows each range and the forecast band, a sale is placed
by keyboard alone, and every screen fits a phone's width without sideways
scrolling (checked at each screenshot).

Chromium is Debian's (``chromium``, driven through ``chromium-driver`` by
Selenium; nothing is downloaded). Screenshots of every screen at desktop and
phone width are saved under the module's temporary directory
(``<tmp>/web*/screens``); ``SCREENSHOTS_TO`` also copies them elsewhere
(``PT_SCREENSHOTS_TO=docs/images`` refreshes the README's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import web_support
from account_support import ProviderProcess
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver  # the tests drive Chromium
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_e2e_support import PASSWORD, new_user
from web_support import WebStack

from papertrader.protocol import Instruction
from papertrader.protocol.decoder import decode_all

web_stack = web_support.web_stack  # one pt up stack for the whole module

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT = 30.0
USER = "webvisitor"
WEB_CLIENT = "papertrader-test-web-page"
#: How many pixels the page is wider than the window (it should never be).
OVERFLOW = "return document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    """The OpenID provider, with the programs' client and a public client for web pages."""
    with ProviderProcess(tmp_path_factory.mktemp("idp"), web_client_id=WEB_CLIENT) as process:
        yield process


@pytest.fixture(scope="module")
def web_stack_env(idp: ProviderProcess) -> dict[str, str]:
    """Two ways for the page: the code flow with PKCE (``testid``), and the ID-token-only
    response (``testidtoken``, as a Google web client would be set up); both the web client."""
    providers = [
        idp.entry("testid", "TestID", web_client_id=WEB_CLIENT),
        idp.entry(
            "testidtoken", "TestID (ID token)", web_client_id=WEB_CLIENT, web_flow="id_token"
        ),
    ]
    # Equity recorded every update interval, so the portfolio's equity chart has points.
    return {"PT_OIDC_PROVIDERS": json.dumps(providers), "PT_EQUITY_SNAPSHOT_SECONDS": "0"}


@pytest.fixture(scope="module")
def browser(web_stack: WebStack) -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        assert os.access(program, os.X_OK), f"{program} is missing: scripts/ensure-os-packages.sh"
    profile = tempfile.mkdtemp(prefix="chromium-", dir=web_stack.tmp)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The pages are HTTPS with the stack's private CA: Chromium trusts it as a user's
    # browser would, from the NSS database of its (test) home, and verifies as ever.
    home = trusting_home(web_stack)
    service = Service(CHROMEDRIVER, env={**os.environ, "HOME": str(home)})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def trusting_home(web_stack: WebStack) -> Path:
    """A home directory whose NSS database (~/.pki/nssdb, where Chromium on Linux keeps
    its trusted CAs) trusts the stack's CA for web sites (certutil, libnss3-tools)."""
    assert shutil.which("certutil"), "certutil is missing: scripts/ensure-os-packages.sh"
    home = Path(tempfile.mkdtemp(prefix="home-", dir=web_stack.tmp))
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    database = f"sql:{nssdb}"
    subprocess.run(["certutil", "-N", "-d", database, "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", database, "-n", "PaperTrader test stack CA", "-t", "C,,",
         "-i", str(web_stack.ca)],
        check=True,
    )  # fmt: skip
    return home


@pytest.fixture(scope="module")
def screens(web_stack: WebStack) -> Path:
    where = web_stack.tmp / "screens"
    where.mkdir()
    return where


def wait_for(
    driver: WebDriver, what: str, check: Callable[[WebDriver], Any], stack: WebStack
) -> Any:
    try:
        # A check may run while the page is navigating (to a provider and back).
        ignored = (StaleElementReferenceException, NoSuchElementException)
        return WebDriverWait(driver, WAIT, 0.1, ignored_exceptions=ignored).until(check)
    except TimeoutException:
        console = "\n".join(str(e) for e in driver.get_log("browser"))  # type: ignore[no-untyped-call]
        pytest.fail(f"waited {WAIT:g} s for {what}\nconsole:\n{console}\n{stack.logs(30)}")


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def visible(driver: WebDriver, element_id: str) -> bool:
    return bool(driver.find_element(By.ID, element_id).is_displayed())


def fill(driver: WebDriver, element_id: str, value: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def shoot(driver: WebDriver, screens: Path, name: str) -> None:
    """The current screen at desktop and phone width."""
    for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        driver.set_window_size(width, height)
        driver.execute_script("window.dispatchEvent(new Event('resize'))")
        # Responsive: the page never scrolls sideways (wide tables scroll in their own box),
        # once the chart has followed the new width (a ResizeObserver redraws it).
        try:
            WebDriverWait(driver, WAIT, 0.1).until(lambda d: d.execute_script(OVERFLOW) <= 0)
        except TimeoutException:
            pass
        driver.save_screenshot(str(screens / f"{name}-{label}.png"))
        overflow = driver.execute_script(OVERFLOW)
        if overflow > 0:
            wide = driver.execute_script(
                "return [...document.querySelectorAll('body *')].filter(e => "
                "e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
                ".slice(0, 8).map(e => `${e.tagName}#${e.id}.${e.className}`)"
            )
            pytest.fail(f"{name} at {label} width is {overflow} px too wide: {wide}")
    driver.set_window_size(*DESKTOP)
    copy_to = os.environ.get("PT_SCREENSHOTS_TO")
    if copy_to:
        for path in screens.glob(f"{name}-*.png"):
            shutil.copy(path, Path(copy_to) / path.name)


def table_rows(driver: WebDriver, table_id: str) -> list[list[str]]:
    """The cells' text, read in one script (the page replaces rows as prices change)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(r => "
        "[...r.querySelectorAll('td')].map(td => td.innerText.trim()))",
        f"#{table_id} tbody tr",
    )
    return [[str(cell) for cell in row] for row in rows]


def csp_of(web_stack: WebStack, index: int) -> str:
    page = web_stack.web(index)
    context = web_stack.ssl_context()
    with urllib.request.urlopen(page + "/", timeout=10, context=context) as response:
        return str(response.headers["content-security-policy"])


def money(text: str) -> Decimal:
    return Decimal(text.replace(",", "").replace("+", ""))


def test_sign_in_page_is_served_with_its_headers_and_no_console_errors(
    browser: WebDriver, web_stack: WebStack, screens: Path
) -> None:
    browser.get(web_stack.web(0) + "/")
    wait_for(
        browser,
        "the page to start",
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true",
        web_stack,
    )
    assert visible(browser, "screen-signin")
    wait_for(browser, "the worker badge", lambda d: "worker-1" in text(d, "worker"), web_stack)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[no-untyped-call]
    assert errors == []
    # Every control is labelled: each input and select has a <label for> or an aria-label.
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input,select')].filter(e => !e.labels.length "
        "&& !e.getAttribute('aria-label')).map(e => e.id)"
    )
    assert unlabelled == []
    nameless = browser.execute_script(
        "return [...document.querySelectorAll('button')].filter(b => !b.textContent.trim() "
        "&& !b.getAttribute('aria-label')).map(b => b.outerHTML)"
    )
    assert nameless == []
    # The configured provider is offered (the page asked the master through its worker).
    wait_for(browser, "the provider's button", lambda d: visible(d, "provider-testid"), web_stack)
    assert text(browser, "provider-testid") == "Sign in with TestID"
    shoot(browser, screens, "signin")


def test_register_signs_in_and_shows_the_watchlist(
    browser: WebDriver, web_stack: WebStack, screens: Path
) -> None:
    fill(browser, "register-username", USER)
    fill(browser, "register-email", f"{USER}@example.org")
    fill(browser, "register-password", PASSWORD)
    browser.find_element(By.ID, "register-submit").click()
    wait_for(browser, "the watchlist", lambda d: visible(d, "screen-watchlist"), web_stack)
    assert text(browser, "whoami") == USER
    wait_for(
        browser,
        "quotes",
        lambda d: (
            len(table_rows(d, "watch-table")) >= 8
            and all(re.fullmatch(r"[\d,]+\.\d+", r[1]) for r in table_rows(d, "watch-table"))
        ),
        web_stack,
    )
    rows = table_rows(browser, "watch-table")
    assert [r[0] for r in rows][:3] == ["AAPL", "MSFT", "GOOG"]
    updated = text(browser, "watch-updated")
    wait_for(
        browser,
        "the next refresh (every update interval)",
        lambda d: text(d, "watch-updated") not in ("", updated),
        web_stack,
    )
    with web_stack.client(1) as client:
        client.login(USER, PASSWORD)
        assert client.quote("AAPL").price > 0
    shoot(browser, screens, "watchlist")


def test_a_wrong_password_is_refused_in_plain_words(
    browser: WebDriver, web_stack: WebStack
) -> None:
    browser.find_element(By.ID, "signout").click()
    wait_for(browser, "the sign-in screen", lambda d: visible(d, "screen-signin"), web_stack)
    fill(browser, "signin-username", USER)
    fill(browser, "signin-password", "not the password")
    browser.find_element(By.ID, "signin-submit").click()
    wait_for(browser, "the refusal", lambda d: text(d, "signin-result") != "", web_stack)
    assert re.search(r"(?i)wrong|incorrect|invalid", text(browser, "signin-result"))
    assert visible(browser, "screen-signin") and not visible(browser, "nav")
    fill(browser, "signin-password", PASSWORD)
    browser.find_element(By.ID, "signin-remember").click()
    browser.find_element(By.ID, "signin-submit").click()
    wait_for(browser, "the watchlist", lambda d: visible(d, "screen-watchlist"), web_stack)


def test_buy_shows_the_fill_and_the_portfolio_changes(
    browser: WebDriver, web_stack: WebStack, screens: Path
) -> None:
    browser.get(web_stack.web(0) + "/#/trade/AAPL")
    wait_for(browser, "the quote", lambda d: text(d, "asset-quote").startswith("AAPL "), web_stack)
    wait_for(
        browser, "the chart", lambda d: d.find_elements(By.CSS_SELECTOR, "#chart canvas"), web_stack
    )
    for chosen in ("week", "month", "year", "all", "day"):
        browser.find_element(By.CSS_SELECTOR, f"#chart-ranges button[data-range={chosen}]").click()
        wait_for(
            browser,
            f"the {chosen} chart",
            lambda d, chosen=chosen: text(d, "chart-caption").startswith(f"AAPL, {chosen}: "),  # type: ignore[misc]
            web_stack,
        )
    assert "forecast" in text(browser, "chart-caption")  # the band is drawn (toggle on)
    fill(browser, "ticket-quantity", "3")
    browser.find_element(By.CSS_SELECTOR, "label[for=side-buy]").click()
    browser.find_element(By.ID, "ticket-submit").click()
    wait_for(
        browser, "the fill", lambda d: text(d, "ticket-result").startswith("Bought"), web_stack
    )
    result = text(browser, "ticket-result")
    match = re.match(r"Bought 3 AAPL at ([\d,.]+) each, ([\d,.]+) in all", result)
    assert match, result
    assert money(match.group(1)) * 3 == money(match.group(2))
    shoot(browser, screens, "trade")
    browser.find_element(By.CSS_SELECTOR, "#nav a[data-screen=portfolio]").click()
    wait_for(
        browser,
        "the position",
        lambda d: any(r[0] == "AAPL" for r in table_rows(d, "portfolio-table")),
        web_stack,
    )
    (aapl,) = [r for r in table_rows(browser, "portfolio-table") if r[0] == "AAPL"]
    assert aapl[1] == "3"
    with web_stack.client(1) as client:
        client.login(USER, PASSWORD)
        portfolio = client.portfolio()
    (position,) = portfolio.positions
    assert position.quantity == 3
    assert money(aapl[2]) == position.average_price
    assert "Unrealised P&L" in text(browser, "portfolio-summary")

    # The equity chart: recorded points over the chosen range, ending with the value now.
    def charted(driver: WebDriver) -> bool:
        driver.find_element(By.CSS_SELECTOR, "#equity-ranges button[data-range=day]").click()
        caption = text(driver, "equity-caption")
        return caption.startswith("Practice account, equity over the day: ") and bool(
            driver.find_elements(By.CSS_SELECTOR, "#equity-chart canvas")
        )

    wait_for(browser, "the equity chart", charted, web_stack)
    pressed = browser.find_element(By.CSS_SELECTOR, "#equity-ranges button[aria-pressed=true]")
    assert pressed.get_attribute("data-range") == "day"
    now = re.search(r"; now ([\d,.]+) \(cash ([\d,.]+)\)$", text(browser, "equity-caption"))
    assert now is not None, text(browser, "equity-caption")
    assert money(now.group(2)) == portfolio.cash
    assert not visible(browser, "equity-account-row")  # no competition: nothing to choose
    shoot(browser, screens, "portfolio")


def test_sell_then_history_lists_both_orders(
    browser: WebDriver, web_stack: WebStack, screens: Path
) -> None:
    browser.get(web_stack.web(0) + "/#/trade/AAPL")
    wait_for(browser, "the ticket", lambda d: visible(d, "ticket"), web_stack)
    # By keyboard only: arrow to "Sell", tab to the symbol, tab to the quantity, Enter.
    browser.execute_script("document.getElementById('side-buy').focus()")
    keys = ActionChains(browser).send_keys(Keys.ARROW_RIGHT, Keys.TAB, Keys.TAB)
    keys.key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys("1", Keys.ENTER)
    keys.perform()
    assert browser.find_element(By.ID, "side-sell").is_selected()
    wait_for(
        browser, "the sale", lambda d: text(d, "ticket-result").startswith("Sold 1 AAPL"), web_stack
    )
    browser.find_element(By.CSS_SELECTOR, "#nav a[data-screen=history]").click()
    wait_for(
        browser,
        "two transactions",
        lambda d: len([r for r in table_rows(d, "history-table") if len(r) > 3]) == 2,
        web_stack,
    )
    sides = sorted(r[1] for r in table_rows(browser, "history-table"))
    assert sides == ["buy", "sell"]
    shoot(browser, screens, "history")


def test_a_limit_order_waits_in_the_book_and_is_canceled(
    browser: WebDriver, web_stack: WebStack, screens: Path
) -> None:
    browser.get(web_stack.web(0) + "/#/trade/MSFT")
    wait_for(browser, "the ticket", lambda d: visible(d, "ticket"), web_stack)
    browser.find_element(By.CSS_SELECTOR, "label[for=side-buy]").click()
    fill(browser, "ticket-quantity", "5")
    Select(browser.find_element(By.ID, "ticket-type")).select_by_value("limit")
    assert visible(browser, "ticket-limit") and not visible(browser, "ticket-stop")
    fill(browser, "ticket-limit", "1.00")  # far below the price: it waits
    Select(browser.find_element(By.ID, "ticket-tif")).select_by_value("gtc")
    browser.find_element(By.ID, "ticket-submit").click()
    wait_for(
        browser,
        "the order in the book",
        lambda d: "is waiting for its price" in text(d, "ticket-result"),
        web_stack,
    )
    assert "until you cancel it" in text(browser, "ticket-result")
    wait_for(
        browser,
        "the open order",
        lambda d: any(
            "limit buy 5 MSFT" in r[1] for r in table_rows(d, "orders-table") if len(r) > 2
        ),
        web_stack,
    )
    (row,) = [r for r in table_rows(browser, "orders-table") if len(r) > 2]
    assert row[2] == "1.00" and row[5] == "until canceled"
    shoot(browser, screens, "open-order")
    cancel = browser.find_element(By.CSS_SELECTOR, "#orders-table tbody button")
    # The page refreshes every update interval; an unchanged order keeps its row, so the
    # button under the pointer (or holding the keyboard focus) is never swapped away.
    for _ in range(2):
        seen = text(browser, "asset-quote")
        wait_for(
            browser,
            "a refresh",
            lambda d, seen=seen: text(d, "asset-quote") != seen,  # type: ignore[misc]
            web_stack,
        )
    cancel.click()
    wait_for(browser, "the cancel", lambda d: "is canceled" in text(d, "orders-result"), web_stack)
    wait_for(
        browser,
        "no open order",
        lambda d: all(len(r) == 1 for r in table_rows(d, "orders-table")),
        web_stack,
    )
    Select(browser.find_element(By.ID, "ticket-type")).select_by_value("market")


#: Put before the page's own scripts: every WebSocket message the page sends, as bytes.
RECORD_SENT = """
window.__ptSent = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (data instanceof Uint8Array) window.__ptSent.push(Array.from(data));
  return send.call(this, data);
};
"""


def test_a_quote_goes_to_the_worker_in_one_message(browser: WebDriver, web_stack: WebStack) -> None:
    """switchState(1) and the quote request travel together (docs/PROTOCOL.md 14.4): one
    round trip a quote, and the worker's fastest path."""
    added = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_SENT}
    )
    try:
        browser.get(web_stack.web(0) + "/#/trade/MSFT")
        browser.refresh()  # a new document, so the recorder runs before the page's scripts
        wait_for(browser, "the quote", lambda d: "MSFT" in text(d, "asset-quote"), web_stack)
        sent = browser.execute_script("return window.__ptSent")
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]}
        )
    together = [
        frames
        for frames in (decode_all(bytes(data)) for data in sent)
        if [f.instruction for f in frames]
        == [Instruction.SWITCH_STATE, Instruction.GET_ASSET_VALUE_CURRENT]
    ]
    assert together, [[f.instruction.name for f in decode_all(bytes(d))] for d in sent]
    switch, quote = together[0]
    assert switch.args == (1,) and quote.args == ("MSFT",)
    assert switch.session_id == quote.session_id and quote.request_id == switch.request_id + 1


#: Put before the page's own scripts: how many WebSockets the page opens.
COUNT_OPENED = """
window.__ptOpened = 0;
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    window.__ptOpened += 1;
  }
};
"""


def test_signed_out_elsewhere_the_page_says_so_and_signs_in_on_the_same_connection(
    browser: WebDriver, web_stack: WebStack
) -> None:
    """A data request behind a switchState that fails (the session ended) is refused in
    turn: the page reads past that refusal, so the connection stays in step and is
    kept (one WebSocket throughout, no "reconnecting")."""
    added = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_OPENED}
    )
    try:
        browser.get(web_stack.web(0) + "/#/trade/MSFT")
        browser.refresh()
        wait_for(browser, "the quote", lambda d: "MSFT" in text(d, "asset-quote"), web_stack)
        with web_stack.client(0) as client:
            client.login(USER, PASSWORD)
            client.logout_all(keep_this=False)  # the page's session too
        wait_for(browser, "the sign-in screen", lambda d: visible(d, "screen-signin"), web_stack)
        assert "signed out" in text(browser, "notice")
        fill(browser, "signin-username", USER)
        fill(browser, "signin-password", PASSWORD)
        browser.find_element(By.ID, "signin-remember").click()
        browser.find_element(By.ID, "signin-submit").click()
        wait_for(browser, "the watchlist", lambda d: visible(d, "screen-watchlist"), web_stack)
        browser.get(web_stack.web(0) + "/#/trade/AAPL")
        wait_for(browser, "the quote", lambda d: "AAPL" in text(d, "asset-quote"), web_stack)
        assert browser.execute_script("return window.__ptOpened") == 1
        assert "reconnecting" not in text(browser, "worker")
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]}
        )


def test_an_unknown_symbol_is_refused_cleanly(browser: WebDriver, web_stack: WebStack) -> None:
    browser.get(web_stack.web(0) + "/#/trade/AAPL")
    wait_for(browser, "the ticket", lambda d: visible(d, "ticket"), web_stack)
    browser.find_element(By.CSS_SELECTOR, "label[for=side-buy]").click()
    fill(browser, "ticket-symbol", "ZZZZ")
    fill(browser, "ticket-quantity", "1")
    browser.find_element(By.ID, "ticket-submit").click()
    wait_for(
        browser, "the refusal", lambda d: text(d, "ticket-result").startswith("Not done"), web_stack
    )
    assert "ZZZZ" in text(browser, "ticket-result")
    assert "AAPL" in text(browser, "ticket-result")  # it says what can be traded


def test_a_reload_and_a_new_tab_stay_signed_in(browser: WebDriver, web_stack: WebStack) -> None:
    browser.get(web_stack.web(0) + "/#/portfolio")
    browser.refresh()
    wait_for(browser, "the portfolio", lambda d: visible(d, "screen-portfolio"), web_stack)
    assert text(browser, "whoami") == USER
    wait_for(
        browser,
        "the position",
        lambda d: any(r[:2] == ["AAPL", "2"] for r in table_rows(d, "portfolio-table")),
        web_stack,
    )
    # "Remember me" (ticked at sign-in) outlives the tab, like the CLI's session file.
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    try:
        browser.get(web_stack.web(0) + "/#/history")
        wait_for(browser, "the history", lambda d: visible(d, "screen-history"), web_stack)
        assert text(browser, "whoami") == USER
    finally:
        browser.close()
        browser.switch_to.window(first)


def test_joins_a_class_competition_by_code_and_sees_the_leaderboard(
    browser: WebDriver, web_stack: WebStack, screens: Path
) -> None:
    with web_stack.client(1) as teacher:
        new_user(teacher, "teach")
        created = teacher.create_competition(
            "Web class", datetime.now(timezone.utc) + timedelta(days=7),
            starting_cash=Decimal("2500.00"), private=True,
        )  # fmt: skip
    assert created.join_code
    browser.get(web_stack.web(0) + "/#/competitions")
    wait_for(browser, "the competitions", lambda d: visible(d, "join-form"), web_stack)
    label = browser.find_element(By.CSS_SELECTOR, "label[for=join-code]")
    assert label.text == "Join code"
    fill(browser, "join-code", created.join_code.lower())
    browser.find_element(By.ID, "join-code").send_keys(Keys.ENTER)  # the keyboard suffices
    wait_for(
        browser, "the join", lambda d: "You are in Web class" in text(d, "join-result"), web_stack
    )
    wait_for(
        browser,
        "the leaderboard",
        lambda d: [r[:3] for r in table_rows(d, "leaderboard-table")] == [["1", USER, "2,500.00"]],
        web_stack,
    )
    assert "You are #1 of 1 member" in text(browser, "leaderboard-summary")
    assert any(r[0] == "Web class" for r in table_rows(browser, "competitions-table"))
    shoot(browser, screens, "competitions")
    # The ticket now offers the competition's account: a buy there leaves the practice one.
    browser.get(web_stack.web(0) + "/#/trade/AAPL")
    wait_for(browser, "the account choice", lambda d: visible(d, "ticket-account-row"), web_stack)
    Select(browser.find_element(By.ID, "ticket-account")).select_by_value("Web class")
    browser.find_element(By.CSS_SELECTOR, "label[for=side-buy]").click()
    fill(browser, "ticket-quantity", "1")
    browser.find_element(By.ID, "ticket-submit").click()
    wait_for(browser, "the fill", lambda d: "In Web class." in text(d, "ticket-result"), web_stack)
    assert text(browser, "ticket-result").startswith("Bought 1 AAPL")
    Select(browser.find_element(By.ID, "ticket-account")).select_by_value("")
    # The competition's page shows the member's own account in it: place, cash, positions.
    browser.get(web_stack.web(0) + "/#/competitions/Web%20class")
    wait_for(
        browser,
        "the member's account",
        lambda d: [r[:2] for r in table_rows(d, "my-competition-table")] == [["AAPL", "1"]],
        web_stack,
    )
    assert text(browser, "my-competition-title") == "Your account in Web class"
    summary = re.match(
        r"Rank 1: equity ([\d,.]+) \(cash ([\d,.]+)\)", text(browser, "my-competition-summary")
    )
    assert summary is not None, text(browser, "my-competition-summary")
    ((*_, value),) = table_rows(browser, "my-competition-table")
    assert money(summary.group(2)) < Decimal("2500.00")  # the competition's cash, less the buy
    assert money(summary.group(1)) == money(summary.group(2)) + money(value)
    shoot(browser, screens, "competition-account")
    # The portfolio's equity chart offers the competition account too, from its own cash.
    browser.find_element(By.CSS_SELECTOR, "#nav a[data-screen=portfolio]").click()
    wait_for(browser, "the equity accounts", lambda d: visible(d, "equity-account-row"), web_stack)
    Select(browser.find_element(By.ID, "equity-account")).select_by_value("Web class")
    wait_for(
        browser,
        "the competition's equity",
        lambda d: text(d, "equity-caption").startswith("Web class account"),
        web_stack,
    )
    owned = re.search(r"now ([\d,.]+) \(cash ([\d,.]+)\)", text(browser, "equity-caption"))
    assert owned is not None and money(owned.group(1)) < Decimal("10000"), owned
    with web_stack.client(1) as client:
        client.login(USER, PASSWORD)
        account = client.competition("Web class").account
        practice = client.portfolio()
    assert account is not None and [(p.symbol, p.quantity) for p in account.positions] == [
        ("AAPL", 1)
    ]
    assert [(p.symbol, p.quantity) for p in practice.positions] == [("AAPL", 2)]


def sign_out(driver: WebDriver, stack: WebStack) -> None:
    driver.find_element(By.ID, "signout").click()
    wait_for(driver, "the sign-in screen", lambda d: visible(d, "screen-signin"), stack)


def test_sign_in_with_a_provider_names_a_new_account_and_links_only_with_the_password(
    browser: WebDriver, web_stack: WebStack, idp: ProviderProcess, screens: Path
) -> None:
    sign_out(browser, web_stack)
    # An answer that no sign-in of this tab asked for (its state) signs no one in.
    browser.get(web_stack.web(0) + "/?code=made-up&state=made-up")
    wait_for(browser, "the refusal", lambda d: "state" in text(d, "provider-result"), web_stack)
    assert "code=" not in browser.current_url and not visible(browser, "nav")
    # A first sign-in: the visitor chooses the new account's username.
    idp.sign_in_as("web-subject-1", "newcomer@example.org")
    browser.find_element(By.ID, "provider-testid").click()
    wait_for(
        browser, "the username form", lambda d: visible(d, "provider-username-form"), web_stack
    )
    assert "TestID" in text(browser, "provider-username-intro")
    shoot(browser, screens, "signin-provider-username")
    fill(browser, "provider-username", "newcomer")
    browser.find_element(By.ID, "provider-username").send_keys(Keys.ENTER)  # by keyboard
    wait_for(browser, "the watchlist", lambda d: visible(d, "screen-watchlist"), web_stack)
    assert text(browser, "whoami") == "newcomer"
    assert "code=" not in browser.current_url and "state=" not in browser.current_url
    sign_out(browser, web_stack)
    # The provider vouches for USER's e-mail address: nothing is linked without USER's password.
    idp.sign_in_as("web-subject-2", f"{USER}@example.org")
    browser.find_element(By.ID, "provider-testid").click()
    wait_for(
        browser, "the refusal", lambda d: "already exists" in text(d, "provider-result"), web_stack
    )
    assert visible(browser, "screen-signin") and not visible(browser, "nav")
    fill(browser, "signin-username", USER)
    fill(browser, "signin-password", PASSWORD)
    browser.find_element(By.ID, "signin-submit").click()
    wait_for(browser, "the offer to link", lambda d: visible(d, "link-offer"), web_stack)
    assert text(browser, "whoami") == USER
    shoot(browser, screens, "link-offer")
    browser.find_element(By.ID, "link-offer-accept").click()
    wait_for(browser, "the link", lambda d: "linked" in text(d, "link-offer-result"), web_stack)
    browser.find_element(By.ID, "link-offer-decline").click()
    sign_out(browser, web_stack)
    browser.find_element(By.ID, "provider-testid").click()  # now it opens USER's account
    wait_for(browser, "the watchlist", lambda d: visible(d, "screen-watchlist"), web_stack)
    assert text(browser, "whoami") == USER
    # The ID-token-only response (web_flow "id_token"): the token comes in the fragment.
    sign_out(browser, web_stack)
    browser.find_element(By.ID, "provider-testidtoken").click()
    wait_for(browser, "the watchlist", lambda d: visible(d, "screen-watchlist"), web_stack)
    assert text(browser, "whoami") == USER
    assert "id_token" not in browser.current_url and "state=" not in browser.current_url


def test_keeps_trading_when_its_worker_is_booted(
    browser: WebDriver, web_stack: WebStack, screens: Path
) -> None:
    # worker-2 must know worker-1's page (from the master's list) to let it in: its own
    # page's Content-Security-Policy shows what it knows.
    first = web_stack.web(0).replace("https://", "wss://")
    deadline = time.monotonic() + WAIT
    while first not in csp_of(web_stack, 1) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first in csp_of(web_stack, 1)
    browser.get(web_stack.web(0) + "/#/watchlist")
    wait_for(browser, "worker-1", lambda d: text(d, "worker").startswith("worker-1"), web_stack)
    booted = web_stack.pt("workers", "boot", "worker-1", "--state-dir", str(web_stack.state_dir))
    assert booted.returncode == 0, booted.stdout + booted.stderr
    wait_for(
        browser,
        "the move to worker-2",
        lambda d: text(d, "worker").startswith("worker-2"),
        web_stack,
    )
    browser.find_element(By.CSS_SELECTOR, "#nav a[data-screen=trade]").click()
    fill(browser, "ticket-symbol", "MSFT")
    fill(browser, "ticket-quantity", "2")
    browser.find_element(By.CSS_SELECTOR, "label[for=side-buy]").click()
    browser.find_element(By.ID, "ticket-submit").click()
    wait_for(
        browser,
        "the fill on worker-2",
        lambda d: text(d, "ticket-result").startswith("Bought 2 MSFT"),
        web_stack,
    )
    assert text(browser, "whoami") == USER  # the same session, never signed out
    shoot(browser, screens, "failover")
