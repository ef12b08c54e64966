"""The judging page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, Selenium).

Nothing is downloaded at run time: the driver is ``/usr/bin/chromedriver`` (or ``$CHROMEDRIVER``),
passed explicitly, with Selenium Manager off. A missing browser FAILS this test with the apt line
(``.ci/run`` installs it), it is never skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from embedforge.io import read_jsonl

CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
INSTALL = "apt-get install -y chromium chromium-driver (and pip install selenium: the dev extra)"


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed: {INSTALL}")
    for path, what in ((CHROMEDRIVER, "chromedriver"), (CHROMIUM, "chromium")):
        if not Path(path).is_file():
            pytest.fail(f"{what} not found at {path}: {INSTALL}")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1200,900")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


class _Server:
    """uvicorn on a free local port in a thread, for one session's app."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("judge server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _wait(driver, condition, what: str, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def _docs(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#docs li[data-did]')].map("
        "li => ({did: li.dataset.did, grade: li.dataset.grade,"
        " current: li.classList.contains('current')}))"
    )


def _key(driver, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for k in keys:
        ActionChains(driver).send_keys(k).perform()


def test_judge_three_queries_by_keyboard_then_resume(tiny_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from embedforge.judge.app import create_app
    from embedforge.judge.session import JudgeSession

    driver = _browser()
    try:
        with _Server(create_app(JudgeSession(tiny_run, k=3))) as url:
            driver.get(url)
            _wait(driver, lambda d: "ready" in d.find_element(By.ID, "status").text, "page load")
            texts = ["what about the lease", "what about the refund", "what about the license"]
            for i, text in enumerate(texts):
                _key(driver, "/")
                box = driver.find_element(By.ID, "q")
                box.send_keys(text, Keys.ENTER)
                _wait(driver, lambda d, n=i + 1: len(d.find_elements(By.CSS_SELECTOR, "#queries li")) == n, "query added")  # fmt: skip
            _key(driver, "p" * 3)  # back to the first query (p stops there)
            first = driver.find_element(By.ID, "qtext").text
            assert first == texts[0]
            pools = []
            # query 1: relevant, not, partly, rest not (3); query 2: move with j/k, undo once
            docs = _docs(driver)
            pools.append(docs)
            expected = {docs[0]["did"]: 2, docs[1]["did"]: 0, docs[2]["did"]: 1}
            expected |= {d["did"]: 0 for d in docs[3:]}
            _key(driver, "132" + "3" * (len(docs) - 3))
            _wait(driver, lambda d: d.find_element(By.ID, "qtext").text == texts[1], "next query")
            docs = _docs(driver)
            pools.append(docs)
            _key(driver, "j")  # skip the first document for now
            _wait(driver, lambda d: _docs(d)[1]["current"], "j moves down")
            _key(driver, "1")  # doc 2 relevant, cursor to doc 3
            _wait(driver, lambda d: _docs(d)[1]["grade"] == "2", "graded")
            _key(driver, "u")  # undo it
            _wait(driver, lambda d: _docs(d)[1]["grade"] == "", "undone")
            _key(driver, "kk2")  # back up to doc 1: partly
            _wait(driver, lambda d: _docs(d)[0]["grade"] == "1", "partly")
            second = {docs[0]["did"]: 1}
            # query 3: the first document relevant, then leave (the rest stays unjudged)
            _key(driver, "n")
            _wait(driver, lambda d: d.find_element(By.ID, "qtext").text == texts[2], "n")
            docs = _docs(driver)
            _key(driver, "1")
            _wait(driver, lambda d: _docs(d)[0]["grade"] == "2", "third query graded")
            third = {docs[0]["did"]: 2}
            n = len(expected) + len(second) + len(third)
            saved = f"saved ({n} judgements)"  # shown once no request is pending
            _wait(driver, lambda d: d.find_element(By.ID, "status").text == saved, "all saved")
            driver.save_screenshot(str(tmp_path / "judge.png"))
    finally:
        driver.quit()

    judged = tiny_run / "judged"
    rows = read_jsonl(judged / "queries.jsonl")
    assert [r["text"] for r in rows] == texts
    qids = [r["_id"] for r in rows]
    lines = (judged / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    got: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        q, d, g = line.split("\t")
        got.setdefault(q, {})[d] = int(g)
    assert got == {qids[0]: expected, qids[1]: second, qids[2]: third}

    # reopen: a new session and browser resume where the person stopped
    driver = _browser()
    try:
        with _Server(create_app(JudgeSession(tiny_run, k=3))) as url:
            driver.get(url)
            _wait(driver, lambda d: "resumed" in d.find_element(By.ID, "status").text, "resume")
            n = len(expected) + len(second) + len(third)
            assert (
                f"3 queries, 3 judged, {n} judgements" in driver.find_element(By.ID, "counts").text
            )
            # the cursor is on the first unjudged document: query 2's second one
            assert driver.find_element(By.ID, "qtext").text == texts[1]
            docs = _docs(driver)
            assert [d["did"] for d in docs] == [d["did"] for d in pools[1]]  # same shuffled pool
            assert docs[0]["grade"] == "1" and docs[1]["current"] and docs[1]["grade"] == ""
            assert len(driver.find_elements(By.CSS_SELECTOR, "#queries li")) == 3
    finally:
        driver.quit()
