"""A real browser against the deployed simulated VPS: Debian's Chromium, headless, driven by its
chromedriver, loads each site as a visitor does and reports no Content-Security-Policy violation
and no resource that failed to load. It trusts Caddy's local CA through its own NSS store, as an
operator's browser would after importing the root (no certificate error is ignored), and sends
Flower's basic auth as a browser that was given the password does.

Flower's UI is the page that needs most (its own scripts, styles, fonts and API calls); the app's
page and the API's health are loaded too. A script from another origin injected into the page is
refused and reported: the check sees a violation when there is one.

No traffic leaves this machine: every name but the simulated VPS's resolves to nothing in the
browser (--host-resolver-rules), and its background services are off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
from selenium import webdriver

from tests.e2e.live import CADDY_ROOT_CERT
from tests.smoke.web import flower_credentials

pytestmark = pytest.mark.e2e

#: every violation the page meets, from the moment the document exists
COLLECT = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(
    {directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber}));
"""
QUIET = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
         "--disable-client-side-phishing-detection", "--metrics-recording-only", "--dns-prefetch-disable",
         "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication")


def _required(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: scripts/setup-test-deps.sh installs it (CI runs it)"
    return path


@pytest.fixture(scope="module")
def browser(live, tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    root = home / "caddy-local-root.crt"
    root.write_text(live.out(live.compose("exec", "-T", "caddy", "cat", CADDY_ROOT_CERT)))
    certutil = _required("certutil")
    subprocess.run([certutil, "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True, capture_output=True)
    subprocess.run([certutil, "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "opskit local Caddy CA", "-i", str(root)],
                   check=True, capture_output=True)

    domains = [domain for _, domain in live.env.domains.items()]
    options = webdriver.ChromeOptions()
    options.binary_location = _required("chromium")
    for arg in (*QUIET, f"--user-data-dir={home / 'profile'}",
                # the first rule that matches a name wins: the VPS's names, then nothing for any other
                "--host-resolver-rules=" + ", ".join(f"MAP {d} 127.0.0.1" for d in domains) + ", MAP * ~NOTFOUND"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Chromium reads $HOME/.pki/nssdb: the home of this test, not the machine's
    service = webdriver.ChromeService(executable_path=_required("chromedriver"), env={**os.environ, "HOME": str(home)})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COLLECT})
    driver.execute_cdp_cmd("Network.enable", {})
    try:
        yield driver
    finally:
        driver.quit()


def visit(driver, url: str, headers: dict | None = None) -> dict:
    """Load `url` (with `headers` on every request of the page); what the browser met there."""
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers or {}})
    driver.get_log("browser")  # what an earlier page left
    driver.get(url)
    # the page's own requests after load (Flower polls its API) get a moment to run into the policy
    driver.execute_async_script("setTimeout(arguments[arguments.length - 1], 1500)")
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(r => [r.name, r.responseStatus])")
    return {"title": driver.title, "url": driver.current_url, "violations": driver.execute_script("return window.__csp"),
            "console": [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"],
            "resources": resources}


#: what a browser asks for by itself, which a site need not have (the sample app has no icon)
UNASKED = "/favicon.ico"


def _clean(seen: dict, what: str) -> None:
    assert seen["violations"] == [], f"{what}: Content-Security-Policy violations: {seen['violations']}"
    failed = [(name, status) for name, status in seen["resources"]
              if status and status >= 400 and urlsplit(name).path != UNASKED]
    assert not failed, f"{what}: resources that failed: {failed}"
    errors = [m for m in seen["console"] if UNASKED not in m]
    assert errors == [], f"{what}: the browser's console reports errors: {errors}"


def test_flowers_ui_loads_whole_under_its_policy(browser, live):
    seen = visit(browser, f"https://{live.env.domains.flower}/", flower_credentials(live.env))
    assert "Flower" in seen["title"], seen
    # its own scripts and styles came, so the policy was put to the test
    loaded = [urlsplit(name).path for name, _ in seen["resources"]
              if name.startswith(f"https://{live.env.domains.flower}/")]
    assert any(p.endswith(".js") for p in loaded) and any(p.endswith(".css") for p in loaded), loaded
    _clean(seen, "Flower's UI")
    print(f"Flower's UI: {len(seen['resources'])} resources ({', '.join(sorted(set(loaded)))}), no violation")


def test_the_app_and_the_api_load_under_their_policies(browser, live):
    app = visit(browser, f"https://{live.env.domains.app}/")
    assert app["title"] == "Runs", app
    _clean(app, "the app's page")
    api = visit(browser, f"https://{live.env.domains.api}/health")
    assert "ok" in browser.page_source, browser.page_source[:500]
    _clean(api, "the API's health")


def test_a_script_from_another_origin_is_refused_and_reported(browser, live):
    visit(browser, f"https://{live.env.domains.app}/")
    browser.execute_script("""
        const s = document.createElement('script');
        s.src = 'https://cdn.opskit-blocked.invalid/x.js';
        document.head.appendChild(s);""")
    browser.execute_async_script("setTimeout(arguments[arguments.length - 1], 300)")
    violations = browser.execute_script("return window.__csp")
    assert [(v["directive"], v["blocked"]) for v in violations] == [
        ("script-src-elem", "https://cdn.opskit-blocked.invalid/x.js")], violations
