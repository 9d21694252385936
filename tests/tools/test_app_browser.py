"""The web page (tools/app.py) in a real headless Chromium: type a sentence, generate, count images and maps.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package; skipped with the reason when one is
missing, except under REQUIRE_BROWSER_TEST=1 (set by .ci/run), where a missing browser is a failure.
"""
import os
import threading

import pytest
import torch

from tests.helpers import RUN_CONFIGS, TINY_RUN, small_config, tiny_encoders, tiny_run, tiny_shapes
from tools.app import App, AppModel, find_chromium, headless_chromium, make_server, run_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _require_browser():
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -r requirements.txt)")
    if find_chromium() is None:
        missing.append("chromium and chromedriver (apt-get install chromium chromium-driver)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("REQUIRE_BROWSER_TEST") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """tools.app serving a tiny untrained AttnGAN run and a tiny SSA-GAN run on a free localhost port."""
    _require_browser()
    data = tiny_shapes(tmp_path_factory.mktemp("data"))
    net_e = tiny_encoders(small_config(RUN_CONFIGS["attngan"], data, **TINY_RUN), tmp_path_factory.mktemp("damsm"))
    root = tmp_path_factory.mktemp("runs")
    models = [AppModel(family, *run_config(tiny_run(root, family, data, net_e), None, {}), torch.device("cpu"))
              for family in ("attngan", "ssagan")]
    srv = make_server(App(models, max_variants=8), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


def test_type_generate_and_see_images_and_maps(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#examples button")) > 0
    box = browser.find_element(By.ID, "sentence")
    box.clear()
    box.send_keys("a red circle on a white zebra background")
    variants = browser.find_element(By.ID, "variants")
    variants.clear()
    variants.send_keys("3")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".variant")) == 3)
    stages = browser.find_elements(By.CSS_SELECTOR, ".variant figure.stage img")
    maps = browser.find_elements(By.CSS_SELECTOR, ".variant figure.attn")
    assert len(stages) == 3 * 2  # two stages (16 and 32 px) per variant
    words = ["a", "red", "circle", "on", "a", "white", "background"]
    assert len(maps) == 3 * len(words)  # one map per kept word and variant
    assert [m.text for m in maps[:len(words)]] == words  # the word under each map
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 16
               for img in stages[::2])  # the images really decoded
    assert "'zebra' is not in the vocabulary" in browser.find_element(By.ID, "notes").text
    assert browser.find_element(By.ID, "download").get_attribute("href").startswith("data:image/png;base64,")
    # sorting by the DAMSM score orders the cards by their score
    Select(browser.find_element(By.ID, "order")).select_by_value("score")
    scores = [float(c.get_attribute("data-score")) for c in browser.find_elements(By.CSS_SELECTOR, ".variant")]
    assert scores == sorted(scores, reverse=True)
    shot = tmp_path / "app.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # the model picker: SSA-GAN shows masks instead of attention maps
    Select(browser.find_element(By.ID, "model")).select_by_index(1)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".variant figure.mask")) == 3 * 4)  # 4..32 px
    assert browser.find_elements(By.CSS_SELECTOR, ".variant figure.attn") == []

    # an all-unknown sentence: a clear message, the page stays
    box.clear()
    box.send_keys("zebra giraffe")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_element(By.ID, "message").is_displayed())
    assert "None of the words" in browser.find_element(By.ID, "message").text
