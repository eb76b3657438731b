"""Debian's Firefox ESR, headless, driven over Marionette (the PyPI ``marionette-driver``,
no geckodriver): a fresh temporary profile whose ``user.js`` keeps the browser quiet and
deterministic, every wait bounded, and the process group it started ended at teardown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT

with warnings.catch_warnings():
    # The mozbase packages marionette_driver imports use deprecated APIs at import: mozinfo
    # calls distro.linux_distribution(), mozrunner imports telnetlib (its own copy from 3.13).
    warnings.filterwarnings("ignore", "distro.linux_distribution", DeprecationWarning)
    warnings.filterwarnings("ignore", "'telnetlib' is deprecated", DeprecationWarning)
    from marionette_driver.marionette import Marionette

FIREFOX = "/usr/bin/firefox-esr"  # Debian's: nothing is downloaded at test time
# The machine has no outside network: without these Firefox keeps trying to reach its update,
# telemetry, experiment and safe-browsing services, and shows first-run pages. Firefox also
# applies its own recommended automation prefs once Marionette starts, but only then: these
# hold from the first instant.
PREFS: dict[str, bool | int | str] = {
    # Marionette picks a free port itself and writes it to MarionetteActivePort in the
    # profile: no race with another process taking a port chosen beforehand.
    "marionette.port": 0,
    # No first-run, welcome or what's-new pages, no default-browser or session-restore prompt.
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "startup.homepage_welcome_url": "about:blank",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.tabs.warnOnClose": False,
    "datareporting.policy.firstRunURL": "",
    "browser.backup.enabled": False,
    # No updates of the browser, add-ons, search engines or system add-ons.
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "extensions.update.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "browser.search.update": False,
    "media.gmp-manager.updateEnabled": False,
    # No telemetry, health report, studies or experiments.
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.usage.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.shutdownPingSender.enabled": False,
    "toolkit.telemetry.firstShutdownPing.enabled": False,
    "toolkit.telemetry.newProfilePing.enabled": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.shield.optoutstudies.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    # No other remote connections: remote settings, safe browsing, captive portal and
    # connectivity checks, push, geolocation, speculative connections and prefetching.
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "dom.push.connection.enabled": False,
    "geo.provider.network.url": "",
    "browser.region.network.url": "",
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "browser.urlbar.speculativeConnect.enabled": False,
    "browser.topsites.contile.enabled": False,
    "network.proxy.type": 0,  # straight to loopback, whatever proxy the environment names
    # No slow-script or hang dialogs, no crash reporter.
    "dom.max_script_run_time": 0,
    "dom.ipc.reportProcessHangs": False,
    "browser.crashReports.unsubmittedCheck.enabled": False,
    # The page in the background window still counts as focused and visible.
    "focusmanager.testmode": True,
}


class Firefox:
    """A headless Firefox ESR in a fresh profile, and a Marionette session to it."""

    def __init__(self, width: int = 1360, height: int = 1500, prefs: dict[str, Any] | None = None) -> None:
        self._width, self._height = width, height
        self.profile = Path(tempfile.mkdtemp(prefix="livecam-firefox-"))
        lines = (
            f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in {**PREFS, **(prefs or {})}.items()
        )
        (self.profile / "user.js").write_text("".join(lines))
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        self.log = open(ROOT / "test-artifacts" / "firefox.log", "w+b")  # noqa: SIM115
        self.process: subprocess.Popen | None = None
        self.marionette: Marionette | None = None

    def start(self, timeout: float = 30.0) -> Firefox:
        """Start Firefox and open a session; fail with its output if either takes too long."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECAM_")}
        env["MOZ_CRASHREPORTER_DISABLE"] = "1"
        # Firefox's own test switch: a connection to anything but loopback is refused (no DNS
        # lookup is even made), and it lets the remote-settings prefs above take effect (a
        # release build otherwise ignores them and looks up its settings server).
        env["MOZ_DISABLE_NONLOCAL_CONNECTIONS"] = "1"
        # Its own process group (and session), so that teardown ends every process it forked.
        self.process = subprocess.Popen(
            [FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(self.profile)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        port_file = self.profile / "MarionetteActivePort"
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.process.poll() is None, (
                f"firefox-esr exited {self.process.returncode}:\n{self.output()}"
            )
            assert time.monotonic() < deadline, f"Marionette did not start in {timeout} s:\n{self.output()}"
            time.sleep(0.1)
        port = int(port_file.read_text())
        # A bounded wait on every command: a hung browser fails the test instead of hanging it.
        self.marionette = Marionette(host="127.0.0.1", port=port, socket_timeout=30)
        self.marionette.start_session(timeout=max(1, int(deadline - time.monotonic())))
        self.marionette.timeout.page_load = 20
        self.marionette.timeout.script = 10
        self.marionette.set_window_rect(width=self._width, height=self._height)
        return self

    @property
    def version(self) -> str:
        """The browser's version, as the session reports it."""
        assert self.marionette is not None
        return self.marionette.session_capabilities["browserVersion"]

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event (bounded by the page-load timeout)."""
        assert self.marionette is not None
        self.marionette.navigate(url)

    def run(self, script: str, *args: Any) -> Any:
        """Run a function body in the page (``arguments`` holds ``args``) and return its value.

        Marionette runs it in a sandbox with the page's DOM, so the page's content policy,
        which forbids eval, does not stand in its way.
        """
        assert self.marionette is not None
        return self.marionette.execute_script(script, script_args=list(args), new_sandbox=False)

    def stop(self) -> None:
        """End the session, then the process group started, then remove the profile."""
        if self.marionette is not None:
            self.marionette.cleanup()  # tolerates a browser already gone
            self.marionette = None
        if self.process is not None:
            end_group(self.process)
            self.process = None
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def output(self) -> str:
        """What Firefox printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def end_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``process``, SIGKILL what is left after ``grace`` s,
    and wait (bounded) until none of its members is left."""
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    # Content processes may outlive the parent by a moment, or hang: the group still names them.
    deadline = time.monotonic() + 5
    while members(group) and time.monotonic() < deadline:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    process.wait(5)
    assert members(group) == [], f"processes left in group {group}: {members(group)}"


def members(group: int) -> list[int]:
    """The live (not zombie) processes whose process group is ``group``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == group and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module", name="firefox")
def firefox_fixture() -> Iterator[Firefox]:
    """One headless Firefox ESR for the module, ended with its whole process group."""
    browser = Firefox()
    try:
        yield browser.start()
    finally:
        browser.stop()
